"""Promotion regret: replay a sample of promoted calls on the slice they left, in the background.

A promotion whose smaller-slice replay validates counts as regret (the larger slice was not
needed). Replays run one at a time, at most ``MAX_PENDING`` wait (more are dropped, never
queued without bound), and they stop for the UTC day once ``regret.tokens_per_day`` is spent.
The replay is the same request on the same slice, so its answer may differ only by sampling:
a regret rate is an upper bound on what a better estimator could save.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from stackd.router.slices.controls import utc_day

log = logging.getLogger("stackd.router.slices")
MAX_PENDING = 8
Replay = Callable[[], Awaitable[tuple[bool, int]]]  # -> (validated, tokens spent)


@dataclass(frozen=True, slots=True)
class RegretJob:
    preset: str
    slice: str
    replay: Replay


class RegretReplayer:
    def __init__(
        self,
        record: Callable[[str, str, bool], None],
        clock: Callable[[], float],
        random: Callable[[], float],
    ) -> None:
        self._record = record
        self._clock = clock
        self._random = random
        self._day = ""
        self._spent = 0
        self._gate = asyncio.Semaphore(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self.dropped = 0

    def spent_today(self) -> int:
        day = utc_day(self._clock())
        if day != self._day:
            self._day, self._spent = day, 0
        return self._spent

    def offer(self, job: RegretJob, sample_rate: float, tokens_per_day: int) -> bool:
        """Schedule ``job`` if sampled and within budget; whether it was."""
        if sample_rate <= 0 or self._random() >= sample_rate:
            return False
        if self.spent_today() >= tokens_per_day or len(self._tasks) >= MAX_PENDING:
            self.dropped += 1
            return False
        task = asyncio.get_running_loop().create_task(self._run(job, tokens_per_day))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _run(self, job: RegretJob, tokens_per_day: int) -> None:
        async with self._gate:
            if self.spent_today() >= tokens_per_day:
                self.dropped += 1
                return
            try:
                validated, tokens = await job.replay()
            except Exception as exc:  # a replay that fails tells nothing about regret
                log.info("regret replay on %s:%s failed: %s", job.preset, job.slice, type(exc).__name__)
                return
            self._spent += tokens
            self._record(job.preset, job.slice, validated)

    async def drain(self) -> None:
        """Wait for the scheduled replays (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
