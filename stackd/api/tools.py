"""The orchestrator's tools: ``POST /tools/reason``, ``/tools/invoke_model``, ``/tools/deep_reasoning``.

``GET /tools`` returns the three as OpenAI function-calling tool schemas, generated from the
same pydantic models that validate the calls (``stackd.api.tool_args``), so what the
orchestrator registers is exactly what the endpoints accept. Answers are ``Answer.to_dict()``: the text plus strategy, backend,
model, usage, cost and the attempts. With ``"stream": true`` the answer comes as SSE:
``data: {"delta": "..."}`` events, then ``data: {"done": true, ...}`` (the answer without its
text) or ``data: {"error": {...}}`` naming the backend, then ``data: [DONE]``. While a call waits
for a restarting engine, SSE comments (``: stackd: waiting …``) say so, as on the gateway.

A call whose model, preset or reason chain needs a role the active stack lacks and the stack the
day policy wants has (``stackd.schedule.wake``) wakes that stack first, as the gateway does; the
answer (or the stream's ``done`` event) then carries ``wake``: ``{woke, waited_s, switch_id}``,
the object the gateway's ``stackd.wake`` holds. A stream says it waits with the same comments.

Errors have stackd's shape (``{"error": NAME, "message", ...}``), like the daemon's other
endpoints; a 503 lists every strategy's reason under ``attempts``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from fastapi import APIRouter, Depends
from pydantic import BaseModel
from starlette.routing import Route
from starlette.types import Message, Scope, Send

from stackd.api.chat_stream import WakeStream, first_item, waiting_comment
from stackd.api.raw_asgi import (
    SSE_DONE,
    Auth,
    Handler,
    RawEndpoint,
    dumps,
    send_bytes,
    send_sse,
    sse,
    validate,
)
from stackd.api.tool_args import (
    DeepReasoningArgs,
    InvokeModelArgs,
    ReasonArgs,
    ToolSchema,
    tool_schema,
)
from stackd.errors import StackdError
from stackd.gpu.calls import CallLeases
from stackd.router import ReasonRouter
from stackd.router.routes import MAX_EFFORT
from stackd.router.slices import SlicedAnswer, SliceRequest, SliceRouter
from stackd.router.types import (
    ChatRequest,
    EngineWaiting,
    RouterStreamItem,
    StreamBroken,
    StreamDone,
    TextDelta,
)
from stackd.schedule.wake import Waker, Woken


class CallTimedOut(StackdError):
    """The caller's ``timeout_s`` ran out before the answer was complete."""

    status = 504


def problem_request(args: ReasonArgs | DeepReasoningArgs) -> ChatRequest:
    content = f"{args.problem}\n\nContext:\n{args.context}" if args.context else args.problem
    return ChatRequest([{"role": "user", "content": content}], args.max_tokens, args.temperature)


async def answer_events(
    first: RouterStreamItem, items: AsyncIterator[RouterStreamItem], trailer: dict[str, object] | None = None
) -> AsyncIterator[bytes]:
    """The SSE events of a tool's stream; ``trailer`` (a wake's record) joins the ``done`` event."""
    item: RouterStreamItem | None = first
    while item is not None:
        if isinstance(item, EngineWaiting):
            yield waiting_comment(item)
        elif isinstance(item, TextDelta):
            yield sse({"delta": item.text})
        elif isinstance(item, StreamDone):
            done = item.answer.to_dict()
            done.pop("answer")
            yield sse({"done": True, **done, **(trailer or {})})
            break
        elif isinstance(item, StreamBroken):
            message = f"backend '{item.backend}' failed mid-stream: {item.reason}"
            attempts = [a.to_dict() for a in item.attempts]
            yield sse({"error": {"message": message, "backend": item.backend, "attempts": attempts}})
            break
        try:
            item = await anext(items, None)
        except StackdError as exc:  # every strategy failed after a wait was announced: a 200 now
            yield sse({"error": exc.to_dict()})
            break
    yield SSE_DONE


class ToolAnswer(Protocol):
    """What a tool call answers: its text, and its record (``Answer.to_dict()`` and more)."""

    @property
    def text(self) -> str: ...

    def to_dict(self) -> dict[str, object]: ...


Args = TypeVar("Args", bound=BaseModel)
Calls = tuple[Callable[[], Awaitable[ToolAnswer]], Callable[[], AsyncIterator[RouterStreamItem]]]


@dataclass(frozen=True, slots=True)
class Invocation:
    """One validated tool call: whether it streams, its ``timeout_s``, and (complete, stream)."""

    stream: bool
    timeout_s: float | None
    complete: Callable[[], Awaitable[ToolAnswer]]
    items: Callable[[], AsyncIterator[RouterStreamItem]]


@dataclass(frozen=True, slots=True)
class Tool:
    """One tool: its arguments' model, and ``invoke``, which validates a JSON body as that model
    (``RequestRejected`` when it fails) and turns it into an ``Invocation``."""

    model: type[BaseModel]
    invoke: Callable[[bytes], Invocation]


def tool(model: type[Args], make: Callable[[Args], Calls]) -> Tool:
    def invoke(body: bytes) -> Invocation:
        args = validate(model, body)
        complete, items = make(args)
        stream: bool = getattr(args, "stream", False)
        return Invocation(stream, getattr(args, "timeout_s", None), complete, items)

    return Tool(model, invoke)


def tool_endpoint(tool: Tool) -> Handler:
    """A handler that validates the body as the tool's model and answers its (complete, stream)."""

    async def handle(scope: Scope, body: bytes, send: Send) -> None:
        call = tool.invoke(body)
        complete, stream, timeout_s = call.complete, call.items, call.timeout_s
        started = False

        async def send_tracked(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            async with asyncio.timeout(timeout_s):
                if not call.stream:
                    await send_bytes(send_tracked, 200, dumps((await complete()).to_dict()))
                    return
                items = stream()
                first = await first_item(items)
                trailer = items.trailer if isinstance(items, WakeStream) else None
                await send_sse(send_tracked, answer_events(first, items, trailer))
        except TimeoutError:
            message = f"no complete answer within timeout_s={timeout_s:g} s; the backend call was cancelled"
            if not started:
                raise CallTimedOut(message) from None
            await send(
                {"type": "http.response.body", "body": sse({"error": {"message": message}}) + SSE_DONE}
            )

    return handle


def tool_schemas(router: ReasonRouter) -> list[ToolSchema]:
    """The three tools as OpenAI function schemas; ``invoke_model``'s preset is an enum of the
    config's presets and their slices (``GET /tools`` and the MCP server list these)."""
    presets = sorted(router.config.presets)
    presets += [f"{p}:{s}" for p in sorted(router.config.presets) for s in router.config.presets[p].slices]
    return [
        tool_schema("reason", ReasonArgs),
        tool_schema("invoke_model", InvokeModelArgs, presets),
        tool_schema("deep_reasoning", DeepReasoningArgs),
    ]


def tool_calls(
    router: ReasonRouter,
    slices: SliceRouter | None = None,
    holds: CallLeases | None = None,
    waker: Waker | None = None,
) -> dict[str, Tool]:
    """Each tool's name → its ``Tool`` (its arguments' model; a body → (complete, stream)): the one
    place a tool call becomes a router call, for ``/tools/*`` and the MCP server alike. With a
    ``waker``, each call first wakes the stack it needs (``woken``)."""

    def reason(args: ReasonArgs) -> Calls:
        route = router.reason_route(args.effort)
        request = problem_request(args)
        return (lambda: router.complete(route, request)), (lambda: router.stream(route, request))

    def deep_reasoning(args: DeepReasoningArgs) -> Calls:
        route = router.deep_reasoning_route()
        request = problem_request(args)
        return (lambda: router.complete(route, request)), (lambda: router.stream(route, request))

    def invoke_model(args: InvokeModelArgs) -> Calls:
        return invoke_model_calls(router, slices, holds, args)

    return {
        "reason": tool(ReasonArgs, woken(waker, lambda a: f"reason:effort={a.effort}", reason)),
        "invoke_model": tool(InvokeModelArgs, woken(waker, invoke_name, invoke_model)),
        "deep_reasoning": tool(
            DeepReasoningArgs, woken(waker, lambda a: f"reason:effort={MAX_EFFORT}", deep_reasoning)
        ),
    }


def invoke_model_calls(
    router: ReasonRouter, slices: SliceRouter | None, holds: CallLeases | None, args: InvokeModelArgs
) -> Calls:
    """``invoke_model``: a routed preset through its slices (validated, then sent whole), a preset
    on an on-demand GPU member under a lease, any other straight through the router."""
    opts = args.options
    route = router.preset_route(args.preset, opts.slice)
    messages = args.messages or [{"role": "user", "content": args.prompt}]
    request = ChatRequest(
        messages, opts.max_tokens, opts.temperature, opts.top_p, opts.stop, opts.response_format
    )
    routed = slices.routed(invoke_name(args)) if slices is not None else None
    if routed is not None and slices is not None:
        sliced = SliceRequest(
            request,
            opts.response_format,
            None,
            None,
            opts.retrieved_chunks or 0,
            opts.effort,
            opts.caller,
        )

        async def complete() -> RoutedAnswer:
            return RoutedAnswer(await slices.complete(routed[0], routed[1], sliced))

        return complete, (lambda: routed_items(complete()))
    if holds is not None:  # a preset on an on-demand GPU member: a lease around the call
        return (
            lambda: holds.complete(route, lambda: router.complete(route, request)),
            lambda: holds.stream(route, lambda: router.stream(route, request)),
        )
    return (lambda: router.complete(route, request)), (lambda: router.stream(route, request))


def invoke_name(args: InvokeModelArgs) -> str:
    """The model name an ``invoke_model`` call asks for: its preset, with its slice when given."""
    return (
        args.preset if args.options.slice is None else f"{args.preset.split(':', 1)[0]}:{args.options.slice}"
    )


def woken(
    waker: Waker | None, name_of: Callable[[Args], str], make: Callable[[Args], Calls]
) -> Callable[[Args], Calls]:
    """``make`` behind a wake: the call's route is resolved only once the stack its wake name
    (a gateway model name: ``reason:effort=N``, a preset) needs is up. Without a waker, ``make``."""
    if waker is None:
        return make

    def call(args: Args) -> Calls:
        name = name_of(args)

        async def complete() -> ToolAnswer:
            woke = await waker.wake(name)
            answer = await make(args)[0]()
            return answer if woke is None else WokenAnswer(answer, woke)

        def stream() -> AsyncIterator[RouterStreamItem]:
            waking = waker.begin(name)
            if waking is None:
                return make(args)[1]()
            return WakeStream(waking, name, lambda: make(args)[1]())

        return complete, stream

    return call


@dataclass(frozen=True, slots=True)
class WokenAnswer:
    """An answer that waited for its stack to wake: the answer's record plus ``wake``."""

    answer: ToolAnswer
    woken: Woken

    @property
    def text(self) -> str:
        return self.answer.text

    def to_dict(self) -> dict[str, object]:
        return {**self.answer.to_dict(), "wake": self.woken.to_dict()}


@dataclass(frozen=True, slots=True)
class RoutedAnswer:
    """A routed invoke_model answer: ``Answer.to_dict()`` plus its ``slices`` record."""

    sliced: SlicedAnswer

    @property
    def text(self) -> str:
        return self.sliced.answer.text

    def to_dict(self) -> dict[str, object]:
        return {**self.sliced.answer.to_dict(), "slices": self.sliced.to_dict()}


async def routed_items(answer: Awaitable[RoutedAnswer]) -> AsyncIterator[RouterStreamItem]:
    """A routed answer is validated before it is sent: one text event, then the end."""
    sliced = (await answer).sliced
    if sliced.answer.text:
        yield TextDelta(sliced.answer.text)
    yield StreamDone(sliced.answer)


def build_tools_router(
    router: ReasonRouter,
    auth: Auth,
    slices: SliceRouter | None = None,
    holds: CallLeases | None = None,
    waker: Waker | None = None,
) -> APIRouter:
    """``GET /tools`` (a FastAPI route) and the three POSTs (raw ASGI routes, see raw_asgi.py)."""
    api = APIRouter()

    @api.get("/tools", dependencies=[Depends(auth)], response_model=list[dict[str, object]])
    async def list_tools() -> list[ToolSchema]:
        return tool_schemas(router)

    for name, one in tool_calls(router, slices, holds, waker).items():
        endpoint = RawEndpoint(auth, tool_endpoint(one), "stackd")
        api.routes.append(Route(f"/tools/{name}", endpoint, methods=["POST"], name=name))
    return api
