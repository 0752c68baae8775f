"""stackd's tools over the Model Context Protocol: ``/mcp``, the streamable HTTP transport.

An agent framework that speaks MCP points at ``http://HOST:PORT/mcp`` with the daemon's bearer
token and gets seven tools: ``reason``, ``invoke_model``, ``deep_reasoning`` (the same calls as
``POST /tools/*``: ``tools.tool_calls``), ``switch_stack`` (``POST /model-stacks/switch``),
``status`` (``GET /status``) and ``acquire_lease`` / ``release_lease`` (``/leases``). Each tool
validates its arguments with the HTTP route's own pydantic model and calls the same function,
so the two surfaces cannot drift.

The official SDK's low-level server does the protocol; its session manager runs **stateless**
with JSON answers: every POST is a whole exchange, nothing is kept between calls, and a daemon
restart loses no session. The SDK is ~25 MiB of the daemon's memory (docs/benchmarks.md,
"Idle memory"), so it is loaded, in a worker thread, on the first ``/mcp`` request: a daemon
nobody calls over MCP never holds it. The manager's task group then lives in a task of its own
until the app's lifespan ends (``McpServer.running``). The endpoint is a hot path of the front door (``dispatch.FrontDoor``):
it checks the write token first, for every method (GET and DELETE too, which the front door
would pass on a loopback bind), so no MCP request is served without the token. The SDK's own
DNS-rebinding check is off: a page rebound to 127.0.0.1 does not have the token either.

A tool that fails answers ``isError: true`` with ``NAME: message`` as its text and stackd's
error object (``{"error", "message", ...}``) as its structured content.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from stackd import __version__
from stackd.api.auth import CALLER_KEY
from stackd.api.dispatch import Guard, refuse
from stackd.api.gate import CONTROL, Gate, needs_scope, peer_of, target_of
from stackd.api.keyring import Caller
from stackd.api.leases import LeaseRequest
from stackd.api.raw_asgi import dumps, validate
from stackd.api.scopes import MCP_TOOLS
from stackd.api.scopes import Scope as KeyScope
from stackd.api.stacks import SwitchRequest, switch_stack
from stackd.api.status import daemon_status
from stackd.api.tool_args import ToolSchema, tool_schema
from stackd.api.tools import CallTimedOut, Tool, tool_calls, tool_schemas
from stackd.errors import StackdError
from stackd.logs.request_id import REQUEST_ID, SCOPE_KEY
from stackd.services import Services

if TYPE_CHECKING:  # the SDK itself is imported on the first request (_load_sdk)
    from mcp.server.context import ServerRequestContext
    from mcp.server.lowlevel.server import Server
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
    from mcp_types import CallToolRequestParams, CallToolResult, ListToolsResult, PaginatedRequestParams
    from mcp_types import Tool as McpTool

log = logging.getLogger("stackd.mcp")
MCP_PATH = "/mcp"
INSTRUCTIONS = (
    "stackd runs this workstation's model stack. Call 'reason' to think harder about a problem "
    "(effort 1-10 picks the backend), 'deep_reasoning' for the strongest one, 'invoke_model' for a "
    "named preset; 'status' shows the stack, 'switch_stack' changes it, 'acquire_lease' keeps an "
    "on-demand GPU model resident."
)


class StatusArgs(BaseModel):
    """The daemon's status: the active stack, its members and their state, the GPU ledger, the router's stats and the live leases."""

    model_config = ConfigDict(extra="forbid")


class SwitchStackArgs(SwitchRequest):
    """Switch the workstation to another model stack (make-before-break); with dry_run, only plan it."""


class AcquireLeaseArgs(LeaseRequest):
    """Start an on-demand GPU model of the active stack and keep it resident for ttl_s seconds."""


class ReleaseLeaseArgs(BaseModel):
    """End a lease; the model keeps running until its idle TTL."""

    model_config = ConfigDict(extra="forbid")

    lease_id: str = Field(min_length=1, description="The id acquire_lease answered.")


Lifespan = dict[str, object]  # the SDK's default lifespan's context: an empty dict
Args = TypeVar("Args", bound=BaseModel)
# A tool's JSON arguments -> its answer's text and structured content (``RequestRejected`` when
# they fail its model).
ToolCall = Callable[[bytes], Awaitable[tuple[str, dict[str, object]]]]


class NotRunning(StackdError):
    """An MCP request before the app's lifespan started the session manager, or after it ended."""

    status = 503


class McpServer:
    """The MCP endpoint of one app: its tools, the SDK's server and, while ``running``, its
    session manager. ``__call__`` is the ASGI endpoint the front door routes ``/mcp`` to.

    The SDK, the tools and the session manager are made on the first request inside
    ``running``; concurrent first requests wait for the same start."""

    def __init__(
        self, services: Services, guard: Guard, max_body_bytes: int, gate: Gate | None = None
    ) -> None:
        self._services = services
        self._guard = guard
        self._gate = gate  # each tool's scope (stackd.api.scopes.MCP_TOOLS), models, the audit
        self._max_body_bytes = max_body_bytes
        self._tools: dict[str, tuple[McpTool, type[BaseModel], ToolCall]] = {}
        self._stop: asyncio.Event | None = None  # set while ``running``
        self._started: asyncio.Future[StreamableHTTPSessionManager] | None = None
        self._sessions: asyncio.Task[None] | None = None

    def _build_server(self) -> Server[Lifespan]:
        from mcp.server.lowlevel.server import Server

        self._tools = self._build_tools(self._services)
        return Server(
            "stackd",
            version=__version__,
            instructions=INSTRUCTIONS,
            on_list_tools=self._list_tools,
            on_call_tool=self._call_tool,
        )

    def _build_tools(self, services: Services) -> dict[str, tuple[McpTool, type[BaseModel], ToolCall]]:
        from mcp_types import Tool as McpTool

        tools: dict[str, tuple[McpTool, type[BaseModel], ToolCall]] = {}

        def add(schema: ToolSchema, model: type[BaseModel], call: ToolCall) -> None:
            function = schema["function"]
            tool = McpTool(
                name=function["name"],
                description=function["description"],
                input_schema=function["parameters"],
            )
            tools[tool.name] = (tool, model, call)

        def add_validated(
            name: str, model: type[Args], call: Callable[[Args], Awaitable[tuple[str, dict[str, object]]]]
        ) -> None:
            async def run(body: bytes) -> tuple[str, dict[str, object]]:
                return await call(validate(model, body))

            add(tool_schema(name, model), model, run)

        router = services.router
        if router is not None:
            schemas = {s["function"]["name"]: s for s in tool_schemas(router)}
            for name, one in tool_calls(router, services.slices, waker=services.day).items():
                add(schemas[name], one.model, _answering(one))

        async def status(_: StatusArgs) -> tuple[str, dict[str, object]]:
            body = await daemon_status(services)
            return json.dumps(body), body

        async def switch(args: SwitchStackArgs) -> tuple[str, dict[str, object]]:
            body = await switch_stack(services, args)
            return json.dumps(body), body

        async def acquire(args: AcquireLeaseArgs) -> tuple[str, dict[str, object]]:
            lease = await services.leases.acquire(args.model, args.ttl_s, args.wait_s)
            body = services.leases.to_json(lease)
            return json.dumps(body), body

        async def release(args: ReleaseLeaseArgs) -> tuple[str, dict[str, object]]:
            body = {**services.leases.to_json(await services.leases.release(args.lease_id)), "released": True}
            return json.dumps(body), body

        add_validated("status", StatusArgs, status)
        add_validated("switch_stack", SwitchStackArgs, switch)
        add_validated("acquire_lease", AcquireLeaseArgs, acquire)
        add_validated("release_lease", ReleaseLeaseArgs, release)
        return tools

    def _may_call(self, caller: Caller | None) -> dict[str, tuple[McpTool, type[BaseModel], ToolCall]]:
        """The tools ``caller``'s scopes allow: a key sees only those it may call."""
        if self._gate is None:
            return self._tools
        scopes = caller.scopes if caller is not None else frozenset()
        return {name: entry for name, entry in self._tools.items() if MCP_TOOLS[name] in scopes}

    async def _list_tools(
        self, ctx: ServerRequestContext[Lifespan], _params: PaginatedRequestParams | None
    ) -> ListToolsResult:
        from mcp_types import ListToolsResult

        allowed = self._may_call(_caller(ctx))
        return ListToolsResult(tools=[tool for tool, _, _ in allowed.values()])

    async def _call_tool(
        self, ctx: ServerRequestContext[Lifespan], params: CallToolRequestParams
    ) -> CallToolResult:
        # The SDK runs this in its own task group: the call's request id comes with its scope.
        scope = getattr(ctx.request, "scope", None) or {}
        token = REQUEST_ID.set(scope.get(SCOPE_KEY))
        try:
            caller = _caller(ctx)
            result = await self._call(params, caller)
            if self._gate is not None and caller is not None and MCP_TOOLS.get(params.name) in CONTROL:
                outcome = (
                    "ok"
                    if not result.is_error
                    else f"error: {(result.structured_content or {}).get('error')}"
                )
                target = target_of(None, "", dumps(params.arguments or {}))
                await self._gate.audit(caller, f"mcp {params.name}", target, peer_of(scope), outcome)
            return result
        finally:
            REQUEST_ID.reset(token)

    async def _call(self, params: CallToolRequestParams, caller: Caller | None) -> CallToolResult:
        from mcp_types import CallToolResult, TextContent

        try:
            entry = self._tools.get(params.name)
            if entry is None:
                raise UnknownTool(
                    f"unknown tool '{params.name}'; stackd's tools: {', '.join(self._may_call(caller))}",
                    valid=list(self._may_call(caller)),
                )
            if params.name not in self._may_call(caller):
                raise needs_scope(MCP_TOOLS[params.name])
            call = entry[2]
            args = dumps(params.arguments or {})
            if self._gate is not None and caller is not None and MCP_TOOLS[params.name] is KeyScope.GATEWAY:
                self._gate.allowed_model(caller, MCP_MODEL_PATHS.get(params.name, ""), args)
            text, value = await call(args)
        except StackdError as exc:
            error = exc.to_dict()
            return CallToolResult(
                content=[TextContent(type="text", text=f"{error['error']}: {exc.message}")],
                structured_content=error,
                is_error=True,
            )
        return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=value)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Serve MCP requests while inside: enter it in the app's lifespan. A session manager
        runs once, so each ``running`` makes its own (on its first request)."""
        stop = self._stop = asyncio.Event()
        try:
            yield
        finally:
            sessions = self._sessions
            self._stop = self._started = self._sessions = None
            stop.set()
            if sessions is not None:
                await sessions

    @property
    def sessions(self) -> asyncio.Task[None] | None:
        """The task that runs the SDK's session manager, once a request has started it."""
        return self._sessions

    async def _session_manager(self) -> StreamableHTTPSessionManager:
        if self._stop is None:
            raise NotRunning("the MCP server is not running (the daemon is starting or stopping)")
        if self._started is None:
            self._started = asyncio.get_running_loop().create_future()
            self._sessions = asyncio.create_task(self._serve_sessions(self._stop, self._started))
        # shielded: a first caller that goes away does not cancel the start the others wait for
        return await asyncio.shield(self._started)

    async def _serve_sessions(
        self, stop: asyncio.Event, started: asyncio.Future[StreamableHTTPSessionManager]
    ) -> None:
        """The session manager's task group, entered and left in this one task (anyio's rule)."""
        try:
            # ~0.5 s of imports: in a thread, so that the gateway keeps answering meanwhile
            await asyncio.to_thread(_load_sdk)
            from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
            from mcp.server.transport_security import TransportSecuritySettings

            manager = StreamableHTTPSessionManager(
                app=self._build_server(),
                json_response=True,
                stateless=True,
                security_settings=TransportSecuritySettings(enable_dns_rebinding_protection=False),
                max_request_body_size=self._max_body_bytes,
            )
            async with manager.run():
                started.set_result(manager)
                await stop.wait()
        except Exception as exc:  # each waiting request answers it; the next request tries again
            log.error("the MCP server could not start: %s", exc)
            if not started.done():
                started.set_exception(exc)
            if self._started is started:
                self._started = self._sessions = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            self._guard(Request(scope))
            manager = await self._session_manager()
        except StackdError as exc:
            await refuse(send, exc)
            return
        await manager.handle_request(scope, receive, send)


def _load_sdk() -> None:
    import importlib

    for module in ("mcp.server.streamable_http_manager", "mcp.server.lowlevel.server", "mcp_types"):
        importlib.import_module(module)


class UnknownTool(StackdError):
    status = 404


# The HTTP path whose body names the model, for a key limited to some (``Gate.allowed_model``).
MCP_MODEL_PATHS = {
    "reason": "/tools/reason",
    "invoke_model": "/tools/invoke_model",
    "deep_reasoning": "/tools/deep_reasoning",
}


def _caller(ctx: object) -> Caller | None:
    scope = getattr(getattr(ctx, "request", None), "scope", None) or {}
    caller = scope.get(CALLER_KEY)
    return caller if isinstance(caller, Caller) else None


def _answering(tool: Tool) -> ToolCall:
    """A ``tools.tool_calls`` call as an MCP tool: the complete answer (MCP has no token stream),
    within the caller's ``timeout_s``; the text is the answer, the structured content its record."""

    async def run(body: bytes) -> tuple[str, dict[str, object]]:
        call = tool.invoke(body)
        timeout_s = call.timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                answer = await call.complete()
        except TimeoutError:
            raise CallTimedOut(
                f"no complete answer within timeout_s={timeout_s:g} s; the backend call was cancelled"
            ) from None
        return answer.text, answer.to_dict()

    return run
