"""The status page's "Control actions" section (issue 26's audit trail) in Debian's chromium.

Against a real ``stackd serve`` over an OpenAI simulator with two stacks: without a token the
section says what it needs; with a gateway key's token it says the key lacks the admin scope
(the 403 is shown, nothing breaks); with the bootstrap token a switch made from the page is
listed with its key (``bootstrap``), action, target, peer and outcome. Kept apart from
test_status_page.py, whose daemon starts llama.cpp engines: this one starts in seconds.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from stackd.sim import OpenAISim
from tests.e2e.conftest import Daemon, start_daemon, stop_daemon

CHROMIUM = Path(os.environ.get("STACKD_CHROMIUM", "/usr/bin/chromium"))
if not os.environ.get("CI") and (not CHROMIUM.exists() or importlib.util.find_spec("playwright") is None):
    pytest.skip("needs Debian's chromium and playwright: apt-get install chromium", allow_module_level=True)

from playwright.sync_api import Browser, Page, expect, sync_playwright  # noqa: E402 - after the skip

CONFIG = """
default_stack: first
roles:
  orchestrator: {{required: true}}
models:
  local:
    runtime: remote
    placement: cloud
    api: openai
    endpoint: {url}/v1
    remote: {{}}
  other:
    runtime: remote
    placement: cloud
    api: openai
    endpoint: {url}/v1
    remote: {{}}
stacks:
  first:
    roles: {{orchestrator: local}}
  second:
    roles: {{orchestrator: other}}
reason:
  strategies:
    local: {{role: orchestrator}}
  default_chain: [local]
"""
expect.set_options(timeout=15_000)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as driver:
        args = ["--no-sandbox"] if os.geteuid() == 0 else []  # chromium's sandbox refuses root
        browser = driver.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=args)
        yield browser
        browser.close()


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    with OpenAISim.start_in_thread() as sim:
        config = tmp_path / "stacks.yaml"
        config.write_text(CONFIG.format(url=sim.url))
        daemon = start_daemon(tmp_path, "--no-periodic", config=str(config))
        try:
            yield daemon
        finally:
            stop_daemon(daemon)


def use_token(page: Page, token: str) -> None:
    page.fill("#token-input", token)
    page.click("#token-save")
    expect(page.locator("#token-state")).to_have_text("token set for this tab")


def test_the_page_lists_a_switch_it_made_in_its_control_actions_section(
    browser: Browser, daemon: Daemon, tmp_path: Path
) -> None:
    gateway = json.loads(
        daemon.cli("keys", "create", "--name", "ide", "--scope", "gateway", "--json", check=True).stdout
    )
    page = browser.new_page(viewport={"width": 1200, "height": 900}, device_scale_factor=1)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(daemon.url)
    expect(page.locator("#active-stack")).to_have_text("first")
    section = page.locator("#audit-section")
    expect(section).not_to_have_attribute("open", "")  # folded until opened
    page.click("#audit-section summary")
    expect(page.locator("#audit-note")).to_contain_text("token with the admin scope")
    expect(page.locator("#audit tbody tr")).to_have_count(0)

    use_token(page, gateway["key"])  # a valid key without admin: 403, said, no error
    expect(page.locator("#audit-note")).to_contain_text("lacks the admin scope")
    expect(page.locator("#audit tbody tr")).to_have_count(0)

    use_token(page, daemon.token)
    page.select_option("#stack-select", "second")
    page.click("#switch-button")
    expect(page.locator("#active-stack")).to_have_text("second")
    row = page.locator("#audit tbody tr[data-action='POST /model-stacks/switch']")
    expect(row).to_have_count(1)
    cells = row.locator("td").all_inner_texts()
    assert cells[1:] == ["bootstrap", "POST /model-stacks/switch", "second", "127.0.0.1", "202"], cells
    assert cells[0]  # the local time of the switch
    assert row.locator("td").last.get_attribute("class") == "outcome-ok"  # 202: the page sends wait: false
    # The key created before the page opened is listed too, newest first: the switch above it.
    actions = page.locator("#audit tbody tr").evaluate_all("rows => rows.map(r => r.dataset.action)")
    assert actions == ["POST /model-stacks/switch", "POST /keys"], actions
    expect(page.locator("#audit-note")).to_have_text("(the last 2)")
    page.screenshot(path=str(tmp_path / "audit.png"), full_page=True)
    if os.environ.get("STACKD_AUDIT_SHOT"):
        page.screenshot(path=os.environ["STACKD_AUDIT_SHOT"], full_page=True)

    page.click("#token-forget")
    expect(page.locator("#audit-note")).to_contain_text("token with the admin scope")
    expect(page.locator("#audit tbody tr")).to_have_count(0)
    assert errors == [], errors
    page.close()
