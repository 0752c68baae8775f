"""The dependency rules of docs/architecture.md, checked over the import graph of stackd/.

Every ``import stackd.X`` / ``from stackd.X import …`` in every module (``TYPE_CHECKING`` blocks
and function bodies included: a cycle there is still a design bug) is an edge between two parts
of the house. A new import that the table below does not allow fails here, naming the file and
the line; change the table only together with docs/architecture.md.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import stackd

ROOT = Path(stackd.__file__).parent
EVERYTHING_BELOW_API = frozenset(
    {"config", "drivers", "errors", "gpu", "hardware", "logs", "manager", "planner", "roles"}
    | {"router", "schedule", "services", "settings", "state"}
)

# part -> the parts it may import (its own modules always). Dependencies point downward:
# api/cli -> manager/router -> planner/drivers -> config, and nothing below api/ imports it.
ALLOWED: dict[str, frozenset[str]] = {
    "errors": frozenset(),
    "settings": frozenset(),
    "roles": frozenset(),
    "logs": frozenset(),
    "config": frozenset({"errors"}),
    "state": frozenset({"errors"}),
    "hardware": frozenset({"config", "errors"}),
    "planner": frozenset({"config", "errors", "hardware"}),
    "drivers": frozenset({"config", "errors", "roles", "state"}),
    "router": frozenset({"config", "drivers", "errors", "logs", "roles", "state"}),
    "schedule": frozenset({"config", "errors"}),  # the day policy: pure, like the planner, but reads zones
    "manager": frozenset(
        {"config", "drivers", "errors", "hardware", "planner", "roles", "schedule", "state"}
    ),
    # gpu sits above both: a call's lease (gpu/calls.py) wraps the router's route; neither imports gpu
    "gpu": frozenset(
        {"config", "drivers", "errors", "hardware", "manager", "planner", "roles", "router", "state"}
    ),
    "services": EVERYTHING_BELOW_API - {"services"},
    "api": EVERYTHING_BELOW_API,
    "daemon": EVERYTHING_BELOW_API | {"api"},
    "cli": EVERYTHING_BELOW_API | {"api", "daemon", "sim"},  # `stackd sim` runs the simulators
    "sim": frozenset({"config", "errors"}),  # the product never imports sim (only the CLI's demo)
}
# The planner is pure (no I/O, no clock, no logging, no randomness): these never enter it.
IMPURE = frozenset(
    {"asyncio", "datetime", "logging", "os", "pathlib", "random", "socket", "subprocess", "threading"}
    | {"time", "aiohttp", "docker", "httpx", "ollama", "psutil", "pynvml", "sqlite3"}
)


@dataclass(frozen=True)
class Edge:
    source: Path
    line: int
    module: str  # the imported module, dotted

    def __str__(self) -> str:
        return f"{self.source.relative_to(ROOT.parent)}:{self.line}: imports {self.module}"


def part_of(path: Path) -> str:
    """``stackd/router/backends/openai.py`` -> ``router``; ``stackd/daemon.py`` -> ``daemon``."""
    relative = path.relative_to(ROOT)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def imports(path: Path, text: str) -> list[Edge]:
    edges: list[Edge] = []
    for node in ast.walk(ast.parse(text, str(path))):
        if isinstance(node, ast.Import):
            edges += [Edge(path, node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            edges.append(Edge(path, node.lineno, node.module))
    return edges


def modules() -> list[tuple[Path, str]]:
    return [(p, p.read_text()) for p in sorted(ROOT.rglob("*.py")) if p != ROOT / "__init__.py"]


def broken_rules(sources: list[tuple[Path, str]]) -> list[str]:
    """Each import of ``sources`` (a module's place under stackd/ and its text) the table forbids."""
    broken: list[str] = []
    for path, text in sources:
        source = part_of(path)
        allowed = ALLOWED.get(source)
        if allowed is None:
            broken.append(f"{path.relative_to(ROOT.parent)}: part '{source}' is not in the table")
            continue
        for edge in imports(path, text):
            top, _, rest = edge.module.partition(".")
            if top == "stackd" and rest:
                target = rest.split(".")[0]
                if target != source and target not in allowed:
                    broken.append(f"{edge} ('{source}' may import only {sorted(allowed)})")
            elif source == "planner" and top in IMPURE:
                broken.append(f"{edge} (the planner is pure)")
            elif source == "schedule" and top in IMPURE - {"datetime"}:  # dates in a zone, never now()
                broken.append(f"{edge} (the day policy is pure)")
    return broken


def test_every_import_follows_the_dependency_rules() -> None:
    assert broken_rules(modules()) == []


def test_the_house_keeps_at_most_five_top_level_modules() -> None:
    loose = sorted(p.stem for p in ROOT.glob("*.py") if p.name != "__init__.py")
    assert len(loose) <= 5, loose


def test_a_forbidden_import_is_named_with_its_file_and_line() -> None:
    sources = [
        (ROOT / "planner" / "new.py", "import time\nfrom stackd.manager import ModelStackManager\n"),
        (ROOT / "router" / "new.py", "def f() -> None:\n    from stackd.api import app\n"),
        (
            ROOT / "router" / "fine.py",
            "from stackd.router.types import Usage\nfrom stackd.config import models\n",
        ),
        (ROOT / "newpart" / "x.py", "import os\n"),
    ]
    found = broken_rules(sources)
    assert len(found) == 4, found
    assert found[0] == "stackd/planner/new.py:1: imports time (the planner is pure)"
    assert found[1].startswith("stackd/planner/new.py:2: imports stackd.manager ('planner' may import only")
    assert found[2].startswith("stackd/router/new.py:2: imports stackd.api ('router' may import only")
    assert found[3] == "stackd/newpart/x.py: part 'newpart' is not in the table"


def test_the_product_never_imports_the_in_memory_fakes() -> None:
    users = [
        str(edge)
        for path, text in modules()
        for edge in imports(path, text)
        if edge.module == "stackd.drivers.memory" and path.name != "memory.py"
    ]
    assert users == []


def test_the_managers_parts_never_reach_back_into_the_manager() -> None:
    """``ModelStackManager`` is composed of its parts (worker, executor, journalled, startup,
    probes, status): none of them imports the manager, not even for a type (startup acts through
    its ``RecoveryHost`` protocol, status reads a ``StatusSnapshot``)."""
    whole = {"stackd.manager", "stackd.manager.model_stack_manager"}
    users = {"__init__", "model_stack_manager", "periodic", "day", "energy"}  # they drive it: not parts
    parts = [(p, t) for p, t in modules() if p.parent == ROOT / "manager" and p.stem not in users]
    assert {p.stem for p, _ in parts} >= {"worker", "executor", "journalled", "startup", "probes", "status"}
    reaching = [str(edge) for path, text in parts for edge in imports(path, text) if edge.module in whole]
    assert reaching == []


# Member health is decided once (``MemberHealth.verdict``, stackd/manager/probes.py); these read it.
HEALTH_READERS = (
    "manager/status.py",
    "api/status.py",
    "api/page.py",
    "api/page_members.py",
    "api/page_view.py",
)
HEALTH_WORDS = frozenset({"ok", "degraded", "probes", "probe"})  # a probe's result, the degraded table


def health_decisions(path: Path, text: str) -> list[str]:
    """Each branch of ``text`` that tests a probe's result or the degraded table itself, and each
    call of ``is_clustered`` (whether a member may be skipped is the verdict's ``skip``)."""
    found: list[str] = []
    where = path.relative_to(ROOT.parent)
    for node in ast.walk(ast.parse(text, str(path))):
        tests: list[ast.expr] = []
        if isinstance(node, ast.If | ast.IfExp | ast.While):
            tests.append(node.test)
        elif isinstance(node, ast.comprehension):
            tests += node.ifs
        elif isinstance(node, ast.match_case) and node.guard is not None:
            tests.append(node.guard)
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", getattr(node.func, "attr", "")) == "is_clustered"
        ):
            found.append(f"{where}:{node.lineno}: calls is_clustered")
        for test in tests:
            for sub in ast.walk(test):
                word = (
                    sub.attr
                    if isinstance(sub, ast.Attribute)
                    else sub.id
                    if isinstance(sub, ast.Name)
                    else ""
                )
                if word in HEALTH_WORDS and not (isinstance(test, ast.Name) and test.id == "probe"):
                    found.append(f"{where}:{getattr(sub, 'lineno', '?')}: branches on {word}")
    return found


def test_status_router_and_roles_read_one_health_verdict() -> None:
    readers = [
        p for p, _ in modules() if str(p.relative_to(ROOT)) in HEALTH_READERS or p.parent.name == "router"
    ]
    assert len(readers) > len(HEALTH_READERS)
    deciding = [d for path in readers for d in health_decisions(path, path.read_text())]
    assert deciding == []


def test_a_reader_that_decides_health_itself_is_named() -> None:
    text = "def state(probe, degraded, name):\n    if name in degraded:\n        return 1\n    return probe.ok and 2\n"
    text += "def skip(model):\n    return 3 if not probe.ok else is_clustered(model)\n"
    found = health_decisions(ROOT / "manager" / "status.py", text)
    assert sorted(found) == [
        "stackd/manager/status.py:2: branches on degraded",
        "stackd/manager/status.py:6: branches on ok",
        "stackd/manager/status.py:6: branches on probe",
        "stackd/manager/status.py:6: calls is_clustered",
    ], found


def test_the_parts_beside_the_manager_ask_it_through_effects() -> None:
    """``stackd.gpu`` types against ``Effects`` (stackd/manager/seams.py), never the manager."""
    whole = {"stackd.manager", "stackd.manager.model_stack_manager", "stackd.manager.executor"}
    reaching = [
        str(e) for p, t in modules() if p.parent.name == "gpu" for e in imports(p, t) if e.module in whole
    ]
    assert reaching == []


# An error's answer (its status, its headers, stackd's or OpenAI's shape) is made in one place:
# the error table of stackd/api/errors.py. The simulators stand in for foreign servers: not stackd's.
ERROR_TABLE = "api/errors.py"
ERROR_HEADERS = ("retry-after", "www-authenticate")
ANSWER_CALLS = ("send", "Response", "HTTPException")  # a call whose name has one of these answers


def error_status(node: ast.expr | None) -> int | None:
    """The HTTP error status (400-599) ``node`` is written as, when it is a constant one."""
    if isinstance(node, ast.Constant) and type(node.value) is int and 400 <= node.value <= 599:
        return node.value
    return None


def error_header(node: ast.expr | None) -> str | None:
    """The constant's text when it names ``Retry-After`` or ``WWW-Authenticate`` as a header, or
    holds such a header's line; else None."""
    if not isinstance(node, ast.Constant) or not isinstance(node.value, str | bytes):
        return None
    text = node.value.decode("latin-1") if isinstance(node.value, bytes) else node.value
    named = any(text.lower() == name or f"{name}:" in text.lower() for name in ERROR_HEADERS)
    return text if named else None


def answers_outside_the_table(path: Path, text: str) -> list[str]:
    """Each place of ``text`` that sets an HTTP error status or an error header itself: a
    ``status``/``status_code`` keyword or dict entry of 400-599, such a number passed to a call
    that sends or builds an answer, a raw ``HTTP/1.1 5xx`` line, ``Retry-After`` or
    ``WWW-Authenticate`` as a header (a dict key, a tuple's name, a header line). A kind's own
    ``status = N`` (a class attribute of its ``StackdError`` subclass) is its declaration, read
    by the table: not an answer."""
    found: list[str] = []
    where = path.relative_to(ROOT.parent)
    for node in ast.walk(ast.parse(text, str(path))):
        if isinstance(node, ast.keyword) and node.arg in ("status", "status_code"):
            if error_status(node.value) is not None:
                found.append(f"{where}:{node.value.lineno}: sets status {error_status(node.value)}")
        elif isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and key.value == "status" and error_status(value):
                    found.append(f"{where}:{value.lineno}: sets status {error_status(value)}")
                if error_header(key) is not None:
                    found.append(f"{where}:{node.lineno}: sets a {error_header(key)} header")
        elif isinstance(node, ast.Call):
            name = getattr(node.func, "id", getattr(node.func, "attr", ""))
            statuses = [error_status(arg) for arg in node.args if error_status(arg) is not None]
            if statuses and any(word in name for word in ANSWER_CALLS):
                found.append(f"{where}:{node.lineno}: {name} answers {statuses[0]}")
        elif isinstance(node, ast.Tuple) and node.elts and error_header(node.elts[0]) is not None:
            found.append(f"{where}:{node.lineno}: sets a {error_header(node.elts[0])} header")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str | bytes):
            raw = node.value.decode("latin-1") if isinstance(node.value, bytes) else node.value
            if raw.startswith("HTTP/1.") and raw[9:12].isdigit() and int(raw[9:12]) >= 400:
                found.append(f"{where}:{node.lineno}: writes a raw {raw[9:12]} answer")
            elif error_header(node) is not None and "\n" in raw:
                found.append(f"{where}:{node.lineno}: writes an error header line")
    return found


def test_error_statuses_and_headers_are_set_only_in_the_error_table() -> None:
    sources = [
        (p, t) for p, t in modules() if str(p.relative_to(ROOT)) != ERROR_TABLE and p.parent.name != "sim"
    ]
    assert any(p.name == "gateway.py" for p, _ in sources) and any(
        p.name == "dispatch.py" for p, _ in sources
    )
    outside = [found for path, text in sources for found in answers_outside_the_table(path, text)]
    assert outside == []


def test_an_answer_made_outside_the_error_table_is_named() -> None:
    text = (
        "async def refuse(send, exc):\n"
        "    headers = [(b'retry-after', b'5'), (b'www-authenticate', b'Bearer')]\n"
        "    await send({'type': 'http.response.start', 'status': 503, 'headers': headers})\n"
        "    await send_bytes(send, 429, b'{}')\n"
        "    return JSONResponse({}, status_code=401, headers={'Retry-After': '1'})\n"
        "RAW = b'HTTP/1.1 503 Service Unavailable\\r\\nretry-after: 1\\r\\n'\n"
        "class Gone(StackdError):\n    status = 410\n"
        "ok = JSONResponse({}, status_code=202), send_bytes(send, 200, b''), headers.get('retry-after')\n"
    )
    found = answers_outside_the_table(ROOT / "api" / "new.py", text)
    assert sorted(found) == [
        "stackd/api/new.py:2: sets a retry-after header",
        "stackd/api/new.py:2: sets a www-authenticate header",
        "stackd/api/new.py:3: sets status 503",
        "stackd/api/new.py:4: send_bytes answers 429",
        "stackd/api/new.py:5: sets a Retry-After header",
        "stackd/api/new.py:5: sets status 401",
        "stackd/api/new.py:6: writes a raw 503 answer",
    ], found
