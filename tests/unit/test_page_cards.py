"""What the redesigned status page computes before it draws (issue 24): member cards, the header's
counts, the RAM bar, grouped notices (one line for every missing cloud key, drift held back
around a switch, the first-start story) and the usage ledger cut into per-backend series.
The page itself in chromium: tests/e2e/test_status_page.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from stackd.api.page_members import counts, member_card, ram_bar
from stackd.api.page_notices import DRIFT_GRACE_S, notices
from stackd.state.usage import UsageRow, UsageStore
from stackd.state.usage_series import SeriesRefused, percentile, usage_series

NO_KEY = "remote model 'gemini-flash' has no API key: set GEMINI_API_KEY"


def engine(**process: Any) -> dict[str, Any]:
    return {
        "name": "smollm2-135m",
        "runtime": "process",
        "placement": "cpu",
        "lifecycle": "always_on",
        "in_stack": True,
        "state": "running",
        "detail": None,
        "memory_mib": 410,
        "measured_mib": 236,
        "last_probe": {"ok": True, "at": 5.0, "error": None},
        "process": {"pid": 4242, "port": 35013, "restarts": 2, "exits": 2, "ready_at": 1000.0, **process},
    }


def remote(name: str, error: str) -> dict[str, Any]:
    return {
        "name": name,
        "runtime": "remote",
        "placement": "cloud",
        "lifecycle": "always_on",
        "in_stack": True,
        "state": "degraded",
        "detail": error,
        "last_probe": {"ok": False, "at": 5.0, "error": error},
    }


def test_a_cards_log_tail_drops_answered_health_probes_and_keeps_the_last_four_other_lines() -> None:
    lines = [
        'INFO:     127.0.0.1:40486 - "GET /v1/models HTTP/1.1" 200 OK',  # uvicorn (llama-cpp-python)
        "srv  log_server_r: request: GET /health 127.0.0.1 200",  # llama.cpp's server
        '[GIN] 2026/12/07 - 03:08:26 | 200 |  41.2µs | 127.0.0.1 | GET      "/api/tags"',  # Ollama
        'INFO:     127.0.0.1:40490 - "POST /v1/chat/completions HTTP/1.1" 200 OK',
        'INFO:     127.0.0.1:40491 - "GET /v1/models HTTP/1.1" 503 Service Unavailable',  # a failing probe stays
        "llama_perf_context_print:        eval time =  425.43 ms /  7 runs",
        "",
    ]
    assert member_card(engine(), lines)["log_tail"] == [lines[3], lines[4], lines[5]]
    many = [f"line {i}" for i in range(10)] + lines[:3]
    assert member_card(engine(), many)["log_tail"] == ["line 6", "line 7", "line 8", "line 9"]


def test_a_card_holds_pid_port_restarts_memory_and_the_log_without_probes() -> None:
    card = member_card(engine(), ['"GET /v1/models HTTP/1.1" 200 OK', "loaded the model"])
    assert {k: card[k] for k in ("pid", "port", "restarts", "ready_at", "memory_kind", "measured_mib")} == {
        "pid": 4242,
        "port": 35013,
        "restarts": 2,
        "ready_at": 1000.0,
        "memory_kind": "RAM",
        "measured_mib": 236,
    }
    assert card["log_tail"] == ["loaded the model"]
    assert card["actions"] == ["restart", "log"]  # always on: a switch stops it, not the card
    dead = member_card(engine() | {"state": "dead", "detail": "exit 1"}, [])
    assert dead["ready_at"] is None  # no uptime for an engine that does not run


def test_a_cloud_member_without_a_key_says_so_once_and_short() -> None:
    card = member_card(remote("gemini-flash", NO_KEY), [])
    assert (card["state"], card["detail"]) == ("no key", "set GEMINI_API_KEY")
    assert card["health"] is not None and card["health"]["error"] is None  # the state says it
    assert card["actions"] == [] and card["memory_kind"] is None


def test_an_idle_on_demand_engine_offers_stop_and_a_stopped_one_neither_stop_nor_restart() -> None:
    idle = member_card(engine() | {"lifecycle": "on_demand", "placement": "gpu"}, [])
    assert idle["actions"] == ["restart", "stop", "log"] and idle["memory_kind"] == "VRAM"
    stopped = member_card(engine() | {"lifecycle": "on_demand", "state": "stopped"}, [])
    assert stopped["actions"] == ["log"]


def test_the_header_counts_healthy_degraded_keyless_and_idle_members_of_the_stack() -> None:
    cards = [
        member_card(engine(), []),
        member_card(remote("gemini-flash", NO_KEY), []),
        member_card(remote("claude", "HTTP 500 from the API"), []),
        member_card(engine() | {"name": "vision", "lifecycle": "on_demand", "state": "stopped"}, []),
        member_card(engine() | {"name": "leftover", "in_stack": False}, []),  # not counted
    ]
    assert counts(cards) == {"members": 4, "healthy": 1, "degraded": 1, "no_key": 1, "idle": 1}


def test_the_ram_bar_shows_measured_declared_foreign_and_free_adding_up_to_the_machine() -> None:
    ram = {
        "total_mib": 24105,
        "available_mib": 21523,
        "headroom_mib": 21000,
        "items": [
            {"model": "smollm2-135m", "mib": 410, "kind": "always_on", "measured_mib": 236},
            {"model": "stopped-one", "mib": 4096, "kind": "on_demand", "measured_mib": None},
        ],
    }
    bar = ram_bar(
        ram, [{"name": "smollm2-135m", "state": "running"}, {"name": "stopped-one", "state": "stopped"}]
    )
    assert bar is not None
    sizes = {s["kind"]: s["mib"] for s in bar["segments"]}
    foreign = 2304  # 24105 - 21523 - 236 = 2346 MiB, drawn in steps of 256 MiB
    assert sizes == {
        "measured": 236,
        "declared": 410 - 236,
        "foreign": foreign,
        "free": 24105 - 236 - 174 - foreign,
    }
    assert bar["headroom_mib"] == 20992  # 21000 in steps of 256
    assert sum(sizes.values()) == 24105
    assert [m["name"] for m in bar["segments"][0]["models"]] == [
        "smollm2-135m"
    ]  # the stopped one is not drawn
    assert ram_bar(None, []) is None


def status_with(**extra: Any) -> dict[str, Any]:
    return {
        "degraded": [
            {
                "model": "claude-sonnet",
                "error": "remote model 'claude-sonnet' has no API key: set ANTHROPIC_API_KEY",
            },
            {
                "model": "deepseek-r1-cloud",
                "error": "remote model 'deepseek-r1-cloud' has no API key: set VAST_API_KEY",
            },
            {"model": "gemini-flash", "error": NO_KEY},
            {
                "model": "mirothinker-cloud",
                "error": "remote model 'mirothinker-cloud' has no API key: set VAST_API_KEY",
            },
        ],
        "drift": [],
        "engines": {"docker": "ok", "ollama": "ok"},
        **extra,
    }


def test_missing_cloud_keys_are_one_line_naming_each_variable_once() -> None:
    [keys] = notices(status_with(), now=100.0)
    assert keys["title"] == (
        "4 cloud members without an API key: set ANTHROPIC_API_KEY, GEMINI_API_KEY, VAST_API_KEY"
    )
    assert keys["lines"] == [
        "ANTHROPIC_API_KEY: claude-sonnet",
        "GEMINI_API_KEY: gemini-flash",
        "VAST_API_KEY: deepseek-r1-cloud, mirothinker-cloud",
    ]


def test_drift_is_held_back_during_a_switch_and_just_after_it_and_shown_otherwise() -> None:
    drift = ["smollm2-135m-long: running but not a member of 'embedded'"]
    during = status_with(drift=drift, switch_in_progress={"switch_id": "s1", "stack": "embedded-long"})
    assert "drift" not in {n["kind"] for n in notices(during, now=100.0)}
    ended = status_with(drift=drift, last_switch={"finished_at": 100.0})
    assert "drift" not in {n["kind"] for n in notices(ended, now=100.0 + DRIFT_GRACE_S - 0.5)}
    shown = [n for n in notices(ended, now=100.0 + DRIFT_GRACE_S + 0.5) if n["kind"] == "drift"]
    assert shown and shown[0]["title"] == f"drift: {drift[0]}"


def test_the_first_start_story_is_one_title_with_its_chapters_folded_under_a_stable_id() -> None:
    story = (
        "first start: 'cloud-offload' could not run: no GPU; 'ollama-only' could not run: Ollama not "
        "reachable; nothing to undo; so stackd picked 'embedded' from fallback_stacks: applied 'embedded' (11 steps)"
    )
    status = status_with(recovery=story, recovery_detail={"action": "first_start", "switch_id": "abc"})
    recovery = next(n for n in notices(status, now=0.0) if n["kind"] == "recovery")
    assert recovery["id"] == "recovery:abc"
    assert (
        recovery["title"]
        == "first start: stackd picked 'embedded' from fallback_stacks: applied 'embedded' (11 steps)"
    )
    assert recovery["lines"][0] == "first start: 'cloud-offload' could not run: no GPU"
    assert len(recovery["lines"]) == 3
    short = status_with(recovery="restart: applied 'embedded' (11 steps)", recovery_detail={"switch_id": "x"})
    [_, line] = notices(short, now=0.0)
    assert line["title"] == "restart: applied 'embedded' (11 steps)" and line["lines"] == []


def test_unreachable_engines_and_other_degraded_members_are_one_group_each() -> None:
    status = status_with(engines={"docker": "not reachable at unix:///x", "ollama": "ok"})
    status["degraded"].append({"model": "claude", "error": "HTTP 500"})
    kinds = {n["kind"]: n for n in notices(status, now=0.0)}
    assert kinds["degraded"]["title"] == "degraded: claude: HTTP 500"
    assert kinds["engines"]["title"] == "Docker: not reachable"


# ---------------------------------------------------------------- the usage ledger as series


def test_series_bucket_calls_failures_rates_and_percentiles_per_backend() -> None:
    now = 3600.0
    samples = [
        (now - 30, "smollm2", 1, 0, 1000.0, 1, 20),  # the last minute: 20 tokens in 1 s
        (now - 20, "smollm2", 1, 0, 3000.0, 1, 40),
        (now - 10, "smollm2", 1, 1, 500.0, 1, 0),
        (now - 90, "smollm2", 2, 0, 400.0, 2, 10),  # one minute earlier: 2 attempts, 200 ms each
        (now - 10, "gemini", 0, 0, 0.0, 0, 0),  # skipped only: no series
        (now - 10, "-", 1, 1, 0.0, 0, 0),  # no backend
        (now - 4000, "smollm2", 9, 9, 9.0, 9, 9),  # before the window
    ]
    series = usage_series(samples, now, window_s=3600, bucket_s=60)
    assert series["buckets"] == 60 and series["start"] == 0.0
    assert list(series["backends"]) == ["smollm2"]
    s = series["backends"]["smollm2"]
    assert s["calls"][-1] == 3 and s["failures"][-1] == 1 and s["tokens"][-1] == 60
    assert s["tokens_per_s"][-1] == round(60 / 4.5, 2)
    assert (s["p50_ms"][-1], s["p95_ms"][-1]) == (1000.0, 3000.0)
    assert (s["calls"][-2], s["p50_ms"][-2], s["tokens_per_s"][-2]) == (2, 200.0, 25.0)
    assert s["calls"][:-2] == [0] * 58 and s["p50_ms"][0] is None  # a gap, not a zero


def test_percentile_is_nearest_rank_and_a_series_of_too_many_buckets_is_widened() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 0.5), percentile(values, 0.95), percentile([7.0], 0.95)) == (50.0, 95.0, 7.0)
    wide = usage_series([], 86400.0, window_s=86400, bucket_s=1)
    assert (wide["buckets"], wide["bucket_s"]) == (1440, 60.0)  # a day in 1 s buckets: 60 s ones
    with pytest.raises(SeriesRefused, match="must be positive"):
        usage_series([], 0.0, window_s=0, bucket_s=1)


def test_the_store_hands_the_series_one_sample_per_row_since_a_time(tmp_path: Path) -> None:
    store = UsageStore(tmp_path / "stackd.db")
    row = UsageRow("local", "smollm2", 1, 1, 0, {"timeout": 1}, 0.0, 0, 250.0, 1, 5, 7, 0.0)
    store.write(10.0, [row])
    store.write(20.0, [row, UsageRow("local", "-", 0, 0, 1, {}, 0.0, 0, 0.0, 0, 0, 0, 0.0)])
    assert store.samples(15.0) == [(20.0, "smollm2", 1, 1, 250.0, 1, 7), (20.0, "-", 0, 0, 0.0, 0, 0)]
    store.close()


def test_the_day_policy_and_gpu_power_reach_the_page_as_one_line_and_a_row_per_card() -> None:
    from stackd.api.page_view import page_snapshot, schedule_line

    schedule = {
        "why": "the evening window runs the upper stack",
        "window": {"stack": "elastic-hybrid", "began": "18:00"},
        "next_change": {"stack": "embedded", "when": "01:00"},
        "hold": {"stack": "elastic-hybrid", "until_local": "02:00"},
    }
    assert schedule_line(schedule) == (
        "the evening window runs the upper stack · window 'elastic-hybrid' since 18:00 · "
        "next 'embedded' at 01:00 · held on 'elastic-hybrid' until 02:00"
    )
    assert schedule_line(
        {"why": "held by manual switch for good", "hold": {"stack": "x", "until_local": None}}
    ) == ("held by manual switch for good")
    assert schedule_line(None) is None
    devices = [
        {"index": 0, "name": "card", "power_w": 121.5, "power_limit_w": 575.0, "util_pct": 31.0},
        {"index": 1, "name": "old card", "power_w": None},  # no reading: no row
    ]
    snapshot = page_snapshot({"gpu": {"devices": devices}, "schedule": schedule}, [], [], [], {}, now=0.0)
    assert snapshot["gpu"]["power"] == [devices[0]]
    assert (snapshot["schedule"] or "").startswith("the evening window")
