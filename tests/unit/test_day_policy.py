"""The day policy, pure (stackd/schedule): windows at their local times across DST changes, holds,
a lease or a running switch deferring a scheduled change (and saying why), idle downshift after
N seconds, which stack a call wakes, and missed windows after a restart. No clock: ``now`` is given.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from stackd.config.loader import load_config
from stackd.config.models import StacksConfig
from stackd.config.schedules import IdleRule, Schedules, ScheduleWindow
from stackd.errors import ConfigError
from stackd.router.routes import MAX_EFFORT, chain_for_effort
from stackd.schedule.policy import Hold, LeaseView, PolicyState, World, decide, hold_until_next, wake_target
from stackd.schedule.wake import call_needs, reason_chain
from stackd.schedule.windows import current_window, next_window, starts_between
from tests.unit.test_manager_world import bundled_config

PARIS = ZoneInfo("Europe/Paris")
DAY, NIGHT = "cloud-offload", "ollama-only"
BUNDLED = Path(__file__).resolve().parents[2] / "config" / "model-stacks.yaml"


def at(text: str) -> float:
    """Unix seconds of a Paris wall-clock time, e.g. ``2026-03-29 09:00``."""
    return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=PARIS).timestamp()


def day_config(idle_after_s: float | None = None, **schedule: Any) -> StacksConfig:
    """The bundled config with weekdays 09:00 -> cloud-offload, every day 18:00 -> ollama-only."""
    config = bundled_config()
    schedules = Schedules(
        timezone="Europe/Paris",
        windows=[
            ScheduleWindow(stack=DAY, days=["mon", "tue", "wed", "thu", "fri"], at="09:00"),
            ScheduleWindow(stack=NIGHT, at="18:00"),
        ],
        **schedule,
    )
    stacks = dict(config.stacks)
    if idle_after_s is not None:
        stacks[DAY] = stacks[DAY].model_copy(update={"idle": IdleRule(after_s=idle_after_s, to=NIGHT)})
    return config.model_copy(update={"schedules": schedules, "stacks": stacks})


def world(
    now: float, active: str | None, switching: str | None = None, leases: tuple[LeaseView, ...] = ()
) -> World:
    """The active stack has run for an hour without a call."""
    return World(now, active, active_since=now - 3600, last_use=None, switching=switching, leases=leases)


# ---------------------------------------------------------------- windows in local time


def test_windows_begin_at_local_time_across_the_spring_dst_change() -> None:
    schedules = day_config().schedules
    assert schedules is not None
    # Friday 27 March 18:00 CET, then Monday 30 March 09:00 CEST: the clocks went forward on Sunday.
    starts = starts_between(schedules, at("2026-03-27 12:00"), at("2026-03-30 12:00"))
    assert [(datetime.fromtimestamp(s.at, PARIS).strftime("%a %H:%M %Z"), s.stack) for s in starts] == [
        ("Fri 18:00 CET", NIGHT),
        ("Sat 18:00 CET", NIGHT),
        ("Sun 18:00 CEST", NIGHT),
        ("Mon 09:00 CEST", DAY),
    ]
    # Saturday 18:00 CET to Sunday 18:00 CEST is 23 hours of real time: the window keeps its local hour.
    assert starts[2].at - starts[1].at == 23 * 3600


def test_windows_begin_at_local_time_across_the_autumn_dst_change() -> None:
    schedules = day_config().schedules
    assert schedules is not None
    nxt = next_window(schedules, at("2026-10-24 19:00"))  # Saturday evening; the clocks go back Sunday 03:00
    assert nxt is not None and nxt.stack == NIGHT
    assert datetime.fromtimestamp(nxt.at, PARIS).strftime("%a %H:%M %Z") == "Sun 18:00 CET"
    assert nxt.at - at("2026-10-24 18:00") == 25 * 3600


def test_the_current_window_is_the_last_that_began() -> None:
    schedules = day_config().schedules
    assert schedules is not None
    monday_8 = current_window(schedules, at("2026-03-30 08:59"))
    assert monday_8 is not None and monday_8.stack == NIGHT  # Sunday 18:00 still runs
    monday_9 = current_window(schedules, at("2026-03-30 09:00"))
    assert monday_9 is not None and monday_9.stack == DAY
    saturday = current_window(schedules, at("2026-03-28 10:00"))  # no weekday window on Saturday
    assert saturday is not None and saturday.stack == NIGHT


def test_cron_windows_follow_the_zone_too() -> None:
    schedules = Schedules(timezone="Europe/Paris", windows=[ScheduleWindow(stack=DAY, cron="30 7 * * 1-5")])
    nxt = next_window(schedules, at("2026-03-27 08:00"))  # Friday after 07:30: next is Monday
    assert nxt is not None
    assert datetime.fromtimestamp(nxt.at, PARIS).strftime("%a %H:%M %Z") == "Mon 07:30 CEST"


def test_a_bad_window_is_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match="HH:MM"):
        ScheduleWindow(stack=DAY, at="9h")
    with pytest.raises(ValueError, match="cron expression"):
        ScheduleWindow(stack=DAY, cron="every morning")
    with pytest.raises(ValueError, match="either at"):
        ScheduleWindow(stack=DAY)
    with pytest.raises(ValueError, match="IANA"):
        Schedules(timezone="Paris/France", windows=[ScheduleWindow(stack=DAY, at="09:00")])


def test_a_window_naming_an_unknown_stack_is_a_config_problem(tmp_path: object) -> None:
    config = day_config()
    data = config.model_dump(mode="json")
    data["schedules"]["windows"][0]["stack"] = "daytime"
    data["stacks"][DAY]["idle"] = {"after_s": 60, "to": DAY}
    with pytest.raises((ValueError, ConfigError)) as caught:
        StacksConfig.model_validate(data)
    assert "unknown stack 'daytime'" in str(caught.value) or "idle down to itself" in str(caught.value)
    problems = StacksConfig.model_validate(data, context={"defer_references": True}).reference_problems()
    messages = {".".join(map(str, path)): text for path, text in problems}
    assert "unknown stack 'daytime'" in messages["schedules.windows.0.stack"]
    assert "idle down to itself" in messages[f"stacks.{DAY}.idle.to"]


# ---------------------------------------------------------------- the decision


def test_a_window_switches_at_its_time() -> None:
    config = day_config()
    before = decide(config, PolicyState(), world(at("2026-03-30 08:59"), NIGHT))
    assert before.action == "none" and before.intended == NIGHT
    state = before.state
    after = decide(config, state, world(at("2026-03-30 09:00"), NIGHT))
    assert (after.action, after.intended) == ("switch", DAY)
    assert after.why.startswith("window 0 since Mon 2026-03-30 09:00 CEST")
    assert after.next_change is not None and after.next_change.stack == NIGHT


def test_a_manual_switch_holds_until_the_next_window_then_the_window_wins() -> None:
    config = day_config()
    now = at("2026-03-30 10:00")  # the day window runs; the user switches to the night stack by hand
    hold = hold_until_next(config, NIGHT, now)
    assert hold.until == at("2026-03-30 18:00")
    state = PolicyState(hold=hold, seen_window=at("2026-03-30 09:00"))
    held = decide(config, state, world(now + 600, NIGHT))
    assert held.action == "none" and held.upper == NIGHT
    assert "held by manual switch until Mon 2026-03-30 18:00 CEST" in held.upper_why
    # A two-hour hold over the 09:00 window of the next morning defers that window until it ends.
    state = PolicyState(hold=Hold(NIGHT, at("2026-03-31 11:00"), at("2026-03-31 09:00") - 60, "--hold 2h"))
    deferred = decide(config, state, world(at("2026-03-31 09:00"), NIGHT))
    assert deferred.action == "none" and "--hold 2h" in deferred.why
    ended = decide(config, deferred.state, world(at("2026-03-31 11:00"), NIGHT))
    assert (ended.action, ended.intended) == ("switch", DAY)
    assert ended.state.hold is None and "the hold on 'ollama-only' ended" in ended.notes


def test_a_lease_defers_a_scheduled_switch_says_why_and_gives_up_at_the_bound() -> None:
    config = day_config(defer_max_s=600)
    lease = LeaseView("vision-qwen25vl", at("2026-03-30 18:30"), "L1")  # night stack lacks vision
    state = PolicyState(seen_window=at("2026-03-30 09:00"))
    first = decide(config, state, world(at("2026-03-30 18:00"), DAY, leases=(lease,)))
    assert first.action == "wait" and first.intended == NIGHT
    assert "lease L1 holds vision-qwen25vl until Mon 2026-03-30 18:30 CEST" in first.why
    assert "'ollama-only' does not run it" in first.why
    later = decide(config, first.state, world(at("2026-03-30 18:05"), DAY, leases=(lease,)))
    assert later.action == "wait" and "waits (300 of 600 s)" in later.why
    gave_up = decide(config, later.state, world(at("2026-03-30 18:10"), DAY, leases=(lease,)))
    assert gave_up.action == "give_up" and "gave up switching to 'ollama-only'" in gave_up.notes[-1]
    # Given up: the lease ending no longer moves the stack until the next window or hold.
    quiet = decide(config, gave_up.state, world(at("2026-03-30 19:00"), DAY))
    assert quiet.action == "none" and "gave up waiting" in quiet.why


def test_a_running_switch_defers_a_scheduled_one() -> None:
    config = day_config()
    decision = decide(
        config, PolicyState(), world(at("2026-03-30 09:00"), NIGHT, switching="switch ab to 'x'")
    )
    assert decision.action == "wait" and "switch ab to 'x'" in decision.why


def test_idle_downshift_after_n_seconds_and_the_wake_target() -> None:
    config = day_config(idle_after_s=600)
    since = at("2026-03-30 09:01")
    state = PolicyState(seen_window=at("2026-03-30 09:00"))
    busy = decide(config, state, World(since + 599, DAY, since, last_use=None))
    assert busy.action == "none"
    used = decide(config, state, World(since + 900, DAY, since, last_use=since + 400))
    assert used.action == "none"  # a call at +400 s: quiet for 500 s only
    idle = decide(config, state, World(since + 1000, DAY, since, last_use=since + 400))
    assert (idle.action, idle.intended) == ("switch", NIGHT)
    assert "had no call for 600 s" in idle.why and idle.state.downshift is not None
    down = decide(config, idle.state, World(since + 1100, NIGHT, since + 1010, last_use=None))
    assert down.action == "none" and down.upper == DAY and down.intended == NIGHT
    # vision is only in the day stack: a call for it wakes the day stack; orchestrator is in both.
    assert wake_target(config, down, NIGHT, "vision", None) == DAY
    assert wake_target(config, down, NIGHT, "orchestrator", None) is None
    # The next window ends the downshift: the night stack's own window.
    evening = decide(config, down.state, World(at("2026-03-30 18:00"), NIGHT, since + 1010, None))
    assert evening.state.downshift is None and evening.upper == NIGHT


def chained_config() -> StacksConfig:
    """The day stack idles to the night stack after 600 s, the night stack to embedded after 300 s."""
    config = day_config(idle_after_s=600)
    night = config.stacks[NIGHT].model_copy(update={"idle": IdleRule(after_s=300, to="embedded")})
    return config.model_copy(update={"stacks": {**config.stacks, NIGHT: night}})


def test_a_lower_stacks_own_idle_is_followed_and_a_call_still_wakes_the_upper_stack() -> None:
    config = chained_config()
    since = at("2026-03-30 09:01")
    state = PolicyState(seen_window=at("2026-03-30 09:00"))
    first = decide(config, state, World(since + 600, DAY, since, last_use=None))
    assert (first.action, first.intended) == ("switch", NIGHT)
    down = since + 610  # the night stack is up
    used = decide(config, first.state, World(down + 400, NIGHT, down, last_use=down + 200))
    assert used.action == "none" and used.intended == NIGHT  # a call at +200 s: quiet for 200 s only
    second = decide(config, first.state, World(down + 300, NIGHT, down, last_use=None))
    assert (second.action, second.intended) == ("switch", "embedded"), second.why
    assert "'ollama-only' had no call for 300 s (its idle.after_s 300)" in second.why
    assert second.state.downshift is not None and second.state.downshift.upper == DAY
    assert second.state.downshift.depth == 2
    settled = decide(config, second.state, World(down + 400, "embedded", down + 310, last_use=None))
    assert (
        settled.action == "none" and settled.upper == DAY and "idle chain reached 'embedded'" in settled.why
    )
    # vision is only in the day stack: a call wakes it from the bottom of the chain.
    assert wake_target(config, settled, "embedded", "vision", None) == DAY
    # The next window ends the whole chain: the night stack's own window.
    evening = decide(config, settled.state, World(at("2026-03-30 18:00"), "embedded", down + 310, None))
    assert evening.state.downshift is None and (evening.action, evening.intended) == ("switch", NIGHT)


def test_an_idle_chain_never_steps_back_onto_itself() -> None:
    # A cycle the loader refuses (ollama-only idles back to the day stack), given unvalidated.
    config = day_config(idle_after_s=600)
    night = config.stacks[NIGHT].model_copy(update={"idle": IdleRule(after_s=300, to=DAY)})
    config = config.model_copy(update={"stacks": {**config.stacks, NIGHT: night}})
    since = at("2026-03-30 09:01")
    first = decide(
        config, PolicyState(seen_window=at("2026-03-30 09:00")), World(since + 600, DAY, since, None)
    )
    later = decide(config, first.state, World(since + 7200, NIGHT, since + 610, last_use=None))
    assert later.action == "none" and later.intended == NIGHT


def test_an_idle_to_cycle_is_refused_at_load_with_file_line_and_a_fix(tmp_path: Path) -> None:
    data = yaml.safe_load(BUNDLED.read_text())
    data["stacks"][DAY]["idle"] = {"after_s": 600, "to": NIGHT}
    data["stacks"][NIGHT]["idle"] = {"after_s": 300, "to": "embedded"}
    data["stacks"]["embedded"]["idle"] = {"after_s": 300, "to": NIGHT}
    path = tmp_path / "cycle.yaml"
    text = yaml.safe_dump(data, sort_keys=False)
    path.write_text(text)
    lines = text.splitlines()
    embedded = lines.index("  embedded:")
    line = next(i for i in range(embedded, len(lines)) if lines[i].strip() == f"to: {NIGHT}") + 1
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert (
        f"{path}:{line}: stacks.embedded.idle.to: idle.to chain {NIGHT} -> embedded -> {NIGHT} never ends "
        "(each idle: is followed in turn); remove idle: from one of them, or point 'embedded' at a stack "
        "outside the cycle"
    ) in str(caught.value)
    data["stacks"]["embedded"].pop("idle")  # a chain that ends loads
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    assert load_config(path, env={}).stacks[NIGHT].idle is not None


def test_call_needs_reads_roles_and_presets() -> None:
    config = bundled_config()
    assert call_needs(config, "vision") == ("vision", None)
    assert call_needs(config, "reason") == (None, None)
    assert call_needs(config, "elastic:9b")[1] == "elastic-9b"


def test_a_reason_call_needs_what_answers_it_on_the_upper_stack() -> None:
    config = bundled_config()
    assert call_needs(config, "reason:effort=9", DAY) == ("deep_reasoning", None)  # cloud_gpu first
    # Effort 2: reflex first; the day stack has no reflex role nor elastic-12b, so cloud_api answers.
    assert call_needs(config, "reason:effort=2", DAY) == (None, "gemini-flash")
    assert call_needs(config, "reason:effort=2", NIGHT) == ("reflex", None)
    assert call_needs(config, "reason:effort=11", DAY) == (None, None)  # the route's 404 to give
    assert call_needs(config, "reason", None) == (None, None)  # no upper stack: nothing to wake
    # The chain is the one the router picks, for every stack and effort.
    for stack in config.stacks:
        for effort in range(1, MAX_EFFORT + 1):
            assert reason_chain(config, stack, effort) == chain_for_effort(config, stack, effort)


def test_a_window_missed_while_stopped_fires_late_within_grace_and_is_reported_beyond() -> None:
    config = day_config(misfire_grace_s=300)
    stopped = PolicyState(seen_window=at("2026-03-29 18:00"))  # the daemon last saw Sunday's window
    late = decide(config, stopped, world(at("2026-03-30 09:04"), NIGHT))
    assert late.action == "switch" and "fired 240 s late" in late.notes[0]
    missed = decide(config, stopped, world(at("2026-03-30 11:00"), NIGHT))
    assert missed.action == "switch" and missed.intended == DAY
    assert "while stackd was stopped (missed by 7200 s" in missed.notes[0]


def test_the_bundled_config_s_commented_schedules_example_is_valid() -> None:
    """Uncommented, the example in config/model-stacks.yaml is a schedule of the bundled stacks."""
    import yaml

    from tests.unit.test_manager_world import ROOT

    lines = (ROOT / "config" / "model-stacks.yaml").read_text().splitlines()
    start = lines.index("# schedules:")
    block = []
    for line in lines[start:]:
        if line.strip() == "#":
            break
        block.append(line[2:])
    example = yaml.safe_load("\n".join(block))
    config = bundled_config()
    data = config.model_dump(mode="json")
    data["schedules"] = example["schedules"]
    checked = StacksConfig.model_validate(data)
    assert checked.schedules is not None and [w.stack for w in checked.schedules.windows] == [
        DAY,
        "ollama-hybrid",
    ]
    idle_line = next(line for line in lines if line.startswith("#   idle: {"))
    IdleRule.model_validate(yaml.safe_load(idle_line[2:])["idle"])
