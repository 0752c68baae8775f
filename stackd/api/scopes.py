"""Which scope each route and MCP tool needs: the one table (docs/security.md mirrors it).

A key holds one or more scopes; a route needs exactly one of them (there is no hierarchy: an
``admin`` key that should also switch stacks is given ``operator`` too). The state dir's
bootstrap token holds every scope.

- ``gateway``: call models (``/v1/*``, the ``/tools`` calls, MCP's call tools).
- ``read``: see the daemon (status, roles, usage, metrics, the page's stream, members' logs).
- ``operator``: change what runs (switch, leases, reload, the slices' kill switch, MCP's switch
  and lease tools).
- ``admin``: keys and the audit trail.

``any-key``: any valid key (MCP's endpoint: each tool has its own scope, ``MCP_TOOLS``). ``open``: no key needed at all (health and the page's static files). ``loopback_open``: no key
needed when the daemon listens on loopback only, as ``ps`` needs none (members' logs and the audit
trail are not: they may hold prompts and peers' addresses). A request of a method the table does
not list for its path still needs a valid key when it may carry a body (the body is never read
before a key is checked), and gets FastAPI's 404 or 405 after that.

``tests/unit/test_scope_table.py`` keeps docs/security.md's table equal to ``ROUTES``, and
``tests/integration/test_auth_matrix.py`` checks every answer against the document's table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum


class Scope(StrEnum):
    GATEWAY = "gateway"
    READ = "read"
    OPERATOR = "operator"
    ADMIN = "admin"


ALL_SCOPES = frozenset(Scope)


@dataclass(frozen=True, slots=True)
class Rule:
    method: str
    path: str  # a template: "{name}" stands for one path segment
    scope: Scope | None  # None: open to everyone (unless any_key)
    loopback_open: bool = False
    any_key: bool = False  # any valid key: MCP's endpoint, whose tools each have their scope

    @property
    def label(self) -> str:
        """The scope as docs/security.md writes it."""
        return "any-key" if self.any_key else str(self.scope or "open")

    @property
    def pattern(self) -> re.Pattern[str]:
        return re.compile("^" + re.sub(r"\\\{[a-z_]+\\\}", "[^/]+", re.escape(self.path)) + "$")


G, R, OP, A = Scope.GATEWAY, Scope.READ, Scope.OPERATOR, Scope.ADMIN

ROUTES: tuple[Rule, ...] = (
    Rule("GET", "/healthz", None),
    Rule("GET", "/", None),
    Rule("GET", "/page/app.js", None),
    Rule("GET", "/page/style.css", None),
    Rule("GET", "/v1/models", G),
    Rule("POST", "/v1/chat/completions", G),
    Rule("GET", "/tools", G),
    Rule("POST", "/tools/reason", G),
    Rule("POST", "/tools/invoke_model", G),
    Rule("POST", "/tools/deep_reasoning", G),
    Rule("POST", "/mcp", None, any_key=True),  # the endpoint; each tool's own scope is in MCP_TOOLS
    Rule("GET", "/mcp", None, any_key=True),
    Rule("DELETE", "/mcp", None, any_key=True),
    Rule("GET", "/status", R, loopback_open=True),
    Rule("GET", "/status/events", R, loopback_open=True),
    Rule("GET", "/schedule", R, loopback_open=True),
    Rule("GET", "/roles", R, loopback_open=True),
    Rule("GET", "/roles/{role}", R, loopback_open=True),
    Rule("GET", "/usage", R, loopback_open=True),
    Rule("GET", "/usage/series", R, loopback_open=True),
    Rule("GET", "/usage/keys", R, loopback_open=True),
    Rule("GET", "/metrics", R, loopback_open=True),
    Rule("GET", "/model-stacks", R, loopback_open=True),
    Rule("GET", "/model-stacks/{name}", R, loopback_open=True),
    Rule("GET", "/model-stacks/switch/{switch_id}", R, loopback_open=True),
    Rule("GET", "/model-stacks/switch/{switch_id}/events", R, loopback_open=True),
    Rule("GET", "/leases", R, loopback_open=True),
    Rule("GET", "/slices", R, loopback_open=True),
    Rule("GET", "/openapi.json", R, loopback_open=True),
    Rule("GET", "/docs", R, loopback_open=True),
    Rule("GET", "/redoc", R, loopback_open=True),
    Rule("GET", "/members/{name}/logs", R),
    Rule("POST", "/model-stacks/switch", OP),
    Rule("POST", "/leases", OP),
    Rule("POST", "/leases/{lease_id}/renew", OP),
    Rule("DELETE", "/leases/{lease_id}", OP),
    Rule("POST", "/config/reload", OP),
    Rule("POST", "/slices/kill-switch", OP),
    Rule("POST", "/members/{name}/restart", OP),
    Rule("POST", "/members/{name}/stop", OP),
    Rule("GET", "/keys", A),
    Rule("POST", "/keys", A),
    Rule("DELETE", "/keys/{name}", A),
    Rule("POST", "/keys/{name}/rotate", A),
    Rule("GET", "/audit", A),
)

MCP_TOOLS: dict[str, Scope] = {
    "reason": G,
    "invoke_model": G,
    "deep_reasoning": G,
    "status": R,
    "switch_stack": OP,
    "acquire_lease": OP,
    "release_lease": OP,
}


class RouteTable:
    """``ROUTES`` indexed for the front door: a fixed path is one dict lookup, a template a
    regex over the few templated rules."""

    def __init__(self, rules: tuple[Rule, ...] = ROUTES) -> None:
        self._fixed: dict[tuple[str, str], Rule] = {}
        self._templated: list[tuple[re.Pattern[str], Rule]] = []
        for rule in rules:
            if "{" in rule.path:
                self._templated.append((rule.pattern, rule))
            else:
                self._fixed[(rule.method, rule.path)] = rule

    def rule(self, method: str, path: str) -> Rule | None:
        """The rule of (method, path); HEAD follows GET. None: no route of that method there."""
        method = "GET" if method == "HEAD" else method
        found = self._fixed.get((method, path))
        if found is not None:
            return found
        for pattern, rule in self._templated:
            if rule.method == method and pattern.match(path):
                return rule
        return None
