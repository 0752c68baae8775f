"""``stackd status`` and ``stackd usage`` read at 80 columns: no line over 80, no cell cut with
'…'; the details are behind ``--wide``. The data is the JSON the daemon answers, as its API
tests see it, with the longest names and messages the bundled config produces."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, TypedDict, Unpack

import pytest
from rich.console import Console

from stackd.cli.render import daemon_header, status_renderable
from stackd.cli.usage_view import usage_renderable

if TYPE_CHECKING:
    from rich.console import RenderableType

    from stackd.cli.shapes import Health, Member, Status
    from stackd.cli.usage_shapes import UsageAnswer, UsageRow


def member(
    name: str, runtime: str, placement: str, mib: int, state: str, detail: str | None = None
) -> Member:
    lifecycle = "on_demand" if detail and "on demand" in detail else "always_on"
    return {
        "name": name,
        "runtime": runtime,
        "placement": placement,
        "memory_mib": mib,
        "lifecycle": lifecycle,
        "in_stack": True,
        "state": state,
        "detail": detail,
        "last_probe": None if state != "degraded" else {"ok": False, "at": 1.0, "error": detail},
    }


STATUS: Status = {
    "active_stack": "elastic-hybrid",
    "members": [
        member("orchestrator-8b", "docker", "gpu", 13312, "running"),
        member("embeddings-nomic", "docker", "gpu", 1024, "running"),
        member("vision-qwen25vl", "docker", "gpu", 8192, "stopped", "on demand: a lease starts it"),
        member("elastic-12b", "ollama", "cpu", 9216, "pulled", "on demand: loaded on first use"),
        member("reflex-llama32-3b", "ollama", "cpu", 2560, "missing", "Ollama tag llama3.2:3b is not pulled"),
        member(
            "deepseek-r1-cloud",
            "remote",
            "cloud",
            0,
            "degraded",
            "remote model 'deepseek-r1-cloud' has no API key: set VAST_API_KEY",
        ),
        member("mirothinker-cloud", "remote", "cloud", 0, "ready"),
        member("smollm2-135m", "process", "cpu", 600, "running"),
    ],
    "roles": {"orchestrator": "orchestrator-8b", "deep_reasoning": "deepseek-r1-cloud"},
    "gpu": {
        "state": "ok",
        "simulated": True,
        "devices": [{"index": 0, "name": "NVIDIA GeForce RTX 5090", "total_mib": 32607, "used_mib": 3072}],
        "vram": {
            "device": 0,
            "gpu_name": "NVIDIA GeForce RTX 5090",
            "total_mib": 32607,
            "reserve_mib": 3072,
            "always_on_mib": 14336,
            "swap_budget_mib": 12288,
            "headroom_mib": 2911,
        },
    },
    "leases": [{"id": "lease-0123456789ab", "model": "vision-qwen25vl", "expires_in_s": 299.6}],
    "recovery": "first start: applied 'elastic-hybrid' (14 steps)",
}

DAEMON: Health = {
    "url": "http://127.0.0.1:8001",
    "pid": 123456,
    "version": "0.1.0",
    "config": "/home/someone/src/stackd/config/model-stacks.yaml",
    "state_dir": "/home/someone/.local/state/stackd",
}


class UsageExtra(TypedDict, total=False):
    """What a row of the test sets beyond its name, calls and skips."""

    failures: dict[str, int]
    mean_first_token_ms: float | None
    mean_total_ms: float | None
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float


def usage_row(
    strategy: str, backend: str, requests: int, skipped: int = 0, **extra: Unpack[UsageExtra]
) -> UsageRow:
    failures = extra.get("failures", {})
    return {
        "strategy": strategy,
        "backend": backend,
        "requests": requests,
        "answered": requests - sum(failures.values()),
        "skipped": skipped,
        "failures": failures,
        "mean_first_token_ms": extra.get("mean_first_token_ms"),
        "mean_total_ms": extra.get("mean_total_ms"),
        "prompt_tokens": extra.get("prompt_tokens", 0),
        "completion_tokens": extra.get("completion_tokens", 0),
        "cost_usd": extra.get("cost_usd", 0.0),
    }


USAGE: UsageAnswer = {
    "rows": [
        usage_row(
            "cloud_api",
            "claude-sonnet",
            12345,
            failures={"timeout": 30, "http_5xx": 4, "connect": 2},
            mean_first_token_ms=812.3,
            mean_total_ms=15234.5,
            prompt_tokens=12345678,
            completion_tokens=9876543,
            cost_usd=123.456789,
        ),
        usage_row("local_scheduler", "orchestrator-cpu", 42, skipped=3, mean_total_ms=120456.7),
        usage_row("local_elastic", "elastic-12b", 7, mean_first_token_ms=95.1, mean_total_ms=4321.0),
        usage_row("cloud_gpu", "mirothinker-cloud", 1, failures={"http_4xx": 1}, mean_total_ms=35.0),
        usage_row("reflex", "-", 0, skipped=5),
    ]
}


def text_at(width: int, renderable: RenderableType) -> str:
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def text_at_80(renderable: RenderableType) -> str:
    return text_at(80, renderable)


def assert_fits_80(text: str) -> None:
    assert "…" not in text, text
    too_long = [line for line in text.splitlines() if len(line) > 80]
    assert too_long == [], text


@pytest.mark.parametrize("wide", [False, True])
def test_status_fits_80_columns(wide: bool) -> None:
    assert_fits_80(text_at_80(daemon_header(DAEMON)) + text_at_80(status_renderable(STATUS, wide=wide)))


def test_status_at_80_columns_shows_details_as_notes_not_cells() -> None:
    text = text_at_80(status_renderable(STATUS))
    header = next(line for line in text.splitlines() if "model" in line and "state" in line)
    assert "detail" not in header
    # every member on one line of the table
    for m in STATUS["members"]:
        assert any(line.startswith(f"│ {m['name']} ") and m["state"] in line for line in text.splitlines())
    assert "reflex-llama32-3b: Ollama tag llama3.2:3b is not pulled" in text
    assert "deepseek-r1-cloud: remote model 'deepseek-r1-cloud' has no API key: set VAST_API_KEY" in " ".join(
        line.strip() for line in text.splitlines()
    )


def test_status_wide_puts_the_details_in_the_table() -> None:
    text = text_at(200, status_renderable(STATUS, wide=True))
    header = next(line for line in text.splitlines() if "model" in line and "state" in line)
    assert "detail" in header and "last probe" in header
    assert any(
        "vision-qwen25vl" in line and "on demand: a lease starts it" in line for line in text.splitlines()
    )


@pytest.mark.parametrize("wide", [False, True])
def test_usage_fits_80_columns(wide: bool) -> None:
    assert_fits_80(text_at_80(usage_renderable(USAGE, wide=wide)))


def test_usage_lists_a_strategy_that_sent_nothing_under_the_table_not_as_a_row() -> None:
    lines = text_at_80(usage_renderable(USAGE)).splitlines()
    assert not any(line.split()[:1] == ["reflex"] for line in lines)
    assert lines[-1] == "skipped without a request: reflex (skipped 5 times)"
    row = next(line for line in lines if line.split()[:1] == ["cloud_api"])
    assert row.split() == ["cloud_api", "claude-sonnet", "12345", "36", "15.23", "12.3M/9.9M", "123.46"]
    assert "tokens" in text_at_80(usage_renderable(USAGE))  # in/out


def test_usage_at_80_columns_says_why_requests_failed_under_the_table() -> None:
    notes = [line.split() for line in text_at_80(usage_renderable(USAGE)).splitlines() if "failed:" in line]
    assert notes == [
        ["cloud_api", "claude-sonnet", "failed:", "timeout", "30,", "http_5xx", "4,", "connect", "2"],
        ["cloud_gpu", "mirothinker-cloud", "failed:", "http_4xx", "1"],
    ]


def test_usage_wide_shows_skips_and_failures_by_kind() -> None:
    lines = text_at(200, usage_renderable(USAGE, wide=True)).splitlines()
    reflex = next(line for line in lines if line.split()[:1] == ["reflex"])
    assert reflex.split()[:5] == ["reflex", "-", "0", "0", "5"]
    assert any("timeout 30, http_5xx 4, connect 2" in line for line in lines)


def test_usage_with_no_rows_says_so() -> None:
    assert text_at_80(usage_renderable({"rows": []})).startswith("no usage recorded yet")


def test_a_measure_that_one_decimal_of_gib_would_hide_is_shown_in_mib() -> None:
    from stackd.cli.render import _memory_text

    # 652 MiB measured against 614 budgeted: "0.6 GiB (0.6 GiB)" would hide the overrun
    assert _memory_text({"memory_mib": 614, "measured_mib": 652}) == "614 MiB (652 MiB)"
    assert _memory_text({"memory_mib": 13312, "measured_mib": 9000}) == "13.0 GiB (8.8 GiB)"
    assert _memory_text({"memory_mib": 614, "measured_mib": 900}) == "0.6 GiB (0.9 GiB !)"
