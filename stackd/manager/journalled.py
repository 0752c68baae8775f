"""One switch run on the worker, journalled around its execution.

The intent is journalled before the first step, each done step as it is done (by the executor's
``journal``), and the outcome after the last: committed (the active stack persisted in the same
transaction) or failed with what was undone (``rolled_back`` when everything was).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from stackd.manager.execution import Execution
from stackd.manager.standing import commit_words
from stackd.manager.switch import Switch, undo_json
from stackd.planner.plan import Plan
from stackd.planner.views import plan_json
from stackd.state.store import StateStore


async def run_journalled(
    store: StateStore,
    switch: Switch,
    plan: Plan,
    execute: Callable[[], Awaitable[Execution]],
    succeeded: Callable[[Execution], None],
    wall_clock: Callable[[], float],
) -> None:
    """Apply ``plan`` for ``switch`` (``execute``); ``succeeded`` is told a committed execution
    before the switch is marked finished, so that whoever waits on it sees the new state."""
    switch.state = "running"
    try:
        await asyncio.to_thread(
            store.begin_switch, switch.id, switch.from_stack, switch.target, plan_json(plan)
        )
        execution = await execute()
        if execution.ok:
            await asyncio.to_thread(
                store.commit_switch,
                switch.id,
                execution.result_json(switch.id, switch.target, switch.from_stack),
            )
            succeeded(execution)
            # Committed with a Swarm member that does not answer: the answer says so.
            switch.note = commit_words(switch.target, execution.standing or {}) or switch.note
            switch.finish("succeeded", None, wall_clock())
        else:
            error = execution.failure_sentence(switch.from_stack)
            undone = [undo_json(u) for u in execution.undone]
            await asyncio.to_thread(
                store.fail_switch,
                switch.id,
                error,
                undone,
                fully_undone=execution.fully_undone,
                result_json=execution.result_json(switch.id, switch.target, switch.from_stack, error),
            )
            switch.finish("rolled_back" if execution.fully_undone else "failed", error, wall_clock())
    except Exception as exc:
        # The journal could not be written (another switch open, disk error): the steps, if
        # any ran, are what the journal says; recovery at the next start reconciles the rest.
        switch.finish("failed", f"switch {switch.id}: the state store failed: {exc}", wall_clock())
    except BaseException:
        switch.finish(
            "failed",
            "interrupted: the daemon stopped during the switch; the next start recovers it",
            wall_clock(),
        )
        raise
