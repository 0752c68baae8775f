"""The attempts' time limit keeps ``asyncio.timeout``'s meaning: its own cancellation is a
``TimeoutError``; one from elsewhere stays a ``CancelledError``."""

from __future__ import annotations

import asyncio
import time

import pytest

from stackd.router.deadline import Deadline


async def test_a_block_past_its_limit_leaves_as_a_timeout_and_the_task_is_not_left_cancelling() -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError), Deadline(0.05):
        await asyncio.sleep(5)
    assert 0.04 <= time.monotonic() - started < 1
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    await asyncio.sleep(0)  # and no cancellation is left pending


async def test_a_block_within_its_limit_is_untouched_and_its_timer_is_gone() -> None:
    with Deadline(0.05):
        value = await asyncio.sleep(0, "answer")
    await asyncio.sleep(0.1)  # past the limit: nothing fires into the task
    assert value == "answer"


async def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    async def attempt() -> None:
        with Deadline(5):
            await asyncio.sleep(5)

    task = asyncio.create_task(attempt())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_cancellation_that_comes_with_the_limit_is_not_taken_for_it() -> None:
    left: list[str] = []

    async def attempt() -> None:
        me = asyncio.current_task()
        assert me is not None
        try:
            with Deadline(0.01):
                time.sleep(0.03)  # noqa: ASYNC251 - the limit passes while the task runs ...
                me.cancel()  # ... and the caller leaves before it fires
                await asyncio.sleep(5)
        except TimeoutError:
            left.append("timeout")
            raise

    with pytest.raises(asyncio.CancelledError):
        await asyncio.create_task(attempt())
    assert left == []


async def test_an_error_of_the_block_passes_through() -> None:
    with pytest.raises(ValueError, match="bad answer"), Deadline(5):
        raise ValueError("bad answer")
