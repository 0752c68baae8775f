"""What the README says that a program can check: every ``stackd`` command it shows exists with
the flags it shows, every path of its API table is served, every ``STACKD_*`` variable it names
is read, every file it points at is in the tree. A claim the code stopped making fails here,
naming the README's line."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer.main

from stackd.api.app import create_app
from stackd.cli.main import app
from stackd.router import ReasonRouter
from stackd.settings import Settings
from tests.unit.test_manager_world import make_world

TOKEN = "readme-claims-token-0123456789"

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
LINES = README.splitlines()


def invocations() -> list[tuple[int, list[str]]]:
    """(line, argv after ``stackd``) of every command the README shows, in code blocks and in
    inline code."""
    found: list[tuple[int, list[str]]] = []
    block: str | None = None  # the language of the code block the line is in
    for number, line in enumerate(LINES, 1):
        if line.startswith("```"):
            block = None if block is not None else line[3:].strip() or "text"
            continue
        if block is None:
            pieces = re.findall(r"`([^`]+)`", line)
        elif block == "bash":
            pieces = [line]
        elif block == "console" and line.startswith("$ "):
            pieces = [line[2:]]  # a command; the rest of a console block is what it printed
        else:
            continue
        for piece in pieces:
            for match in re.finditer(r"(?:^|[\s;&|(]|\.venv/bin/)stackd((?:\s+[^\s;&|#)]+)*)", piece):
                try:
                    argv = shlex.split(match.group(1), comments=True)
                except ValueError:
                    argv = match.group(1).split()
                found.append((number, argv))
    return found


# typer bundles its own click: commands are told apart by what they have, not by click's classes
Command = Any


def is_group(command: Command) -> bool:
    return hasattr(command, "list_commands")


def subcommands(command: Command) -> list[str]:
    return list(command.list_commands(command.context_class(command)))


def resolve(argv: list[str]) -> tuple[Command, list[str], list[str]]:
    """The command ``argv`` names, the words that named it, and the rest."""
    command: Command = typer.main.get_command(app)
    path: list[str] = []
    rest = list(argv)
    while is_group(command) and rest and not rest[0].startswith("-"):
        sub = command.get_command(command.context_class(command), rest[0])
        if sub is None:
            break
        path.append(rest.pop(0))
        command = sub
    return command, path, rest


def options_of(command: Command) -> set[str]:
    names = {"--help"}
    for param in command.params:
        names.update(getattr(param, "opts", []))
        names.update(getattr(param, "secondary_opts", []))
    return names


SHOWN = invocations()


def test_the_readme_shows_commands() -> None:
    assert len(SHOWN) > 20  # the parser still finds them


@pytest.mark.parametrize(("line", "argv"), SHOWN, ids=[f"README:{n}" for n, _ in SHOWN])
def test_every_command_the_readme_shows_exists_with_its_flags(line: int, argv: list[str]) -> None:
    if not argv or argv[0] in {"--version"}:
        return
    command, path, rest = resolve(argv)
    root = typer.main.get_command(app)
    assert path, f"README.md:{line}: 'stackd {' '.join(argv)}': no command '{argv[0]}'"
    if is_group(command):
        # `stackd lease` alone names the group; a word after it must be one of its commands
        assert not rest or rest[0].startswith("-") or rest[0].isupper(), (
            f"README.md:{line}: 'stackd {' '.join(argv)}': '{rest[0]}' is not a command of "
            f"'stackd {' '.join(path)}' ({', '.join(sorted(subcommands(command)))})"
        )
    known = options_of(command) | options_of(root)
    for word in rest:
        flag = word.split("=", 1)[0]
        if flag.startswith("--") or re.fullmatch(r"-[A-Za-z]", flag):
            assert flag in known, (
                f"README.md:{line}: 'stackd {' '.join(argv)}': 'stackd {' '.join(path)}' has no "
                f"option {flag} (it has {', '.join(sorted(known))})"
            )


def api_table_paths() -> list[tuple[int, str]]:
    rows: list[tuple[int, str]] = []
    for number, line in enumerate(LINES, 1):
        match = re.match(r"\|\s*[A-Z/]+\s*\|\s*`([^`]+)`", line)
        if match:
            cell = line.split("|")[2]
            paths = re.findall(r"`(/[^`?]*)`", cell)
            suffixes = re.findall(r"\(`(/[^`?]*)`\)", cell)  # `/a/{id}` (`/events`): also /a/{id}/events
            rows.extend((number, path) for path in paths if path not in suffixes)
            if suffixes and paths and paths[0] != "/":
                rows.extend((number, paths[0] + suffix) for suffix in suffixes)
    return rows


async def test_every_path_of_the_api_table_is_served(tmp_path: Path) -> None:
    """A method no route takes (PATCH) is 405 on a path that is served, and a POST of {} anything
    but "no endpoint" (an unknown path's 404; a 404 naming a missing stack or lease is fine)."""
    rows = api_table_paths()
    assert len(rows) > 10
    world = make_world(tmp_path)
    manager = world.manager()
    await manager.recover()
    router = ReasonRouter(world.config, manager.live_roles)  # the data path is mounted with a router
    app = create_app(world.services(manager, Settings(state_dir=tmp_path / "state"), TOKEN, router=router))
    missing = []
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://stackd") as client:
        for number, path in rows:
            concrete = re.sub(r"\{[^}]+\}", "x", path)
            answer = await client.patch(concrete, headers=auth)
            if answer.status_code == 404:  # the hot paths take POST before the router sees a method
                answer = await client.post(concrete, headers=auth, json={})
            if answer.status_code == 404 and "no endpoint" in answer.text:
                missing.append(f"README.md:{number}: {path}")
    await router.aclose()
    for m in world.managers:
        await m.aclose()
        m.store.close()
    assert not missing, f"paths the README lists that the daemon does not serve: {missing}"


def test_every_stackd_variable_the_readme_names_is_read_by_the_code() -> None:
    named = set(re.findall(r"\bSTACKD_[A-Z_]+\b", README))
    source = "\n".join(p.read_text() for p in (ROOT / "stackd").rglob("*.py"))
    scripts = "\n".join(p.read_text() for p in (ROOT / "scripts").iterdir() if p.is_file())
    unread = sorted(v for v in named if v not in source and v not in scripts)
    # the demo's API key is read through the demo config's api_key_env; the page's screenshots
    # are asked for by its own test
    tests = "\n".join(
        p.read_text() for p in (ROOT / "tests").rglob("*.py") if p.name != "test_readme_claims.py"
    )
    unread = [v for v in unread if v != "STACKD_DEMO_API_KEY" and v not in tests]
    assert not unread, f"the README names variables nothing reads: {unread}"


def test_every_file_the_readme_points_at_exists() -> None:
    pointed = set(re.findall(r"`((?:config|docs|scripts|deploy|bench|tests|stackd)/[^`\s*]+)`", README))
    missing = sorted(p for p in pointed if not (ROOT / p.split("::")[0].rstrip(",.")).exists())
    assert not missing, f"the README points at files that are not in the tree: {missing}"
