"""A corpus of broken configs: each is refused at its line, by ``stackd config check`` and by a
hot reload, and a refused reload keeps the config the daemon runs.

Every file in tests/fixtures/configs/broken/ breaks valid-minimal.yaml (or the file as a whole)
in one way; its first line says how and its second, ``# expect LINE: TEXT``, where the refusal
must point and what it must say. The corpus covers YAML itself (syntax, tabs, tags, aliases,
an alias bomb, nesting, several documents, encodings), the schema (unknown keys, types, enums,
ranges, sections), ``${VAR}`` expansion and the references between models, roles and stacks.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from stackd.api.app import create_app
from stackd.config.loader import load_config
from stackd.settings import Settings
from tests.unit.test_api import AUTH, BUNDLED_TEXT, TOKEN
from tests.unit.test_manager_world import close_all, make_world

BROKEN = Path(__file__).resolve().parents[1] / "fixtures" / "configs" / "broken"
CORPUS = sorted(BROKEN.glob("*.yaml"))
SCRIPT = Path(sys.executable).with_name("stackd")
STACKD = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "stackd.cli"]
ENV = {k: v for k, v in os.environ.items() if k not in {"VISION_URL", "GEMINI_BASE_URL"}}


def expectation(path: Path) -> tuple[int, str, bytes]:
    """(line, text) the refusal of ``path`` must have, and the file's bytes."""
    content = path.read_bytes()
    found = re.fullmatch(r"# expect (\d+): (.+)", content.split(b"\n")[1].decode())
    assert found, f"{path.name}: line 2 must be '# expect LINE: TEXT'"
    return int(found[1]), found[2], content


def test_the_corpus_has_at_least_40_files() -> None:
    assert len(CORPUS) >= 40


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_config_check_refuses_it_at_its_line_without_a_traceback(path: Path) -> None:
    line, text, _ = expectation(path)
    started = time.monotonic()
    run = subprocess.run(
        [*STACKD, "config", "check", str(path)], env=ENV, capture_output=True, text=True, timeout=60
    )
    assert time.monotonic() - started < 10
    assert run.returncode == 1, run.stdout + run.stderr
    assert "Traceback" not in run.stderr + run.stdout
    problems = run.stderr.strip().splitlines()
    assert problems[-1].endswith(f"problem(s) in {path}")
    for problem in problems[:-1]:
        assert re.match(rf"{re.escape(str(path))}:\d+: ", problem), problem  # FILE:LINE, every one
    assert any(p.startswith(f"{path}:{line}: ") and text in p for p in problems), run.stderr


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
async def test_a_hot_reload_of_it_is_refused_and_keeps_the_running_config(tmp_path: Path, path: Path) -> None:
    line, text, content = expectation(path)
    world = make_world(tmp_path)
    config_file = tmp_path / "model-stacks.yaml"
    config_file.write_text(BUNDLED_TEXT)
    manager = world.manager()
    await manager.recover()
    services = world.services(manager, Settings(state_dir=tmp_path / "state", config=config_file), TOKEN)
    app = create_app(services, load_config=lambda: load_config(config_file, env={}))
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://stackd"
        ) as client:
            before = (await client.get("/model-stacks")).json()
            config_file.write_bytes(content)
            started = time.monotonic()
            answer = await client.post("/config/reload", headers=AUTH)
            assert time.monotonic() - started < 2
            assert answer.status_code == 422, answer.text
            assert answer.json()["error"] == "ConfigError"
            problems = answer.json()["problems"]
            assert any(p.startswith(f"{config_file}:{line}: ") and text in p for p in problems), problems
            assert services.config is world.config and manager.config is world.config
            assert (await client.get("/model-stacks")).json() == before
    finally:
        await close_all(world)
