"""One engine process of a ``runtime: process`` member: what it was started as, and its exit.

An ``Engine`` is either spawned by this daemon (its ``asyncio`` process: exit status known) or
adopted from an earlier run (only its record: its exit is seen by polling ``/proc``). The member
that owns it (``stackd.drivers.process``) decides what happens to it.
"""

from __future__ import annotations

import asyncio
import hashlib
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from stackd.config.models import ProcessRuntime
from stackd.drivers import process_group as pg
from stackd.state.processes import ProcessRecord


class ProcessJournal(Protocol):
    """Where engine PIDs are recorded (``stackd.state.processes``). Calls block briefly (fsync)."""

    def record(self, rec: ProcessRecord) -> None: ...
    def forget(self, model: str, pid: int) -> None: ...
    def all(self) -> list[ProcessRecord]: ...


@dataclass
class Engine:
    record: ProcessRecord
    proc: asyncio.subprocess.Process | None  # None for an engine adopted from an earlier run
    stopping: bool = False

    @property
    def pid(self) -> int:
        return self.record.pid

    def exited(self) -> bool:
        if self.proc is not None:
            return self.proc.returncode is not None
        return not pg.is_alive(self.record.pid, self.record.create_time)

    def exit_code(self) -> int | None:
        """The leader's return code; None while it runs, or when adopted (not our child)."""
        return self.proc.returncode if self.proc is not None else None

    async def wait(self) -> int | None:
        """Wait for the leader's exit; its return code (None when adopted: not our child)."""
        if self.proc is not None:
            return await self.proc.wait()
        while True:  # not our child: no exit notification, so poll /proc
            if self.exited():
                return None
            await asyncio.sleep(0.5)

    async def wait_capping_log(self, log_cap_bytes: int) -> int | None:
        """``wait``, and meanwhile keep the engine's log under its cap (checked every 5 s)."""
        while True:
            try:
                async with asyncio.timeout(5.0):
                    return await self.wait()
            except TimeoutError:
                await asyncio.to_thread(pg.cap_log, Path(self.record.log_path), log_cap_bytes)


def runtime_digest(runtime: ProcessRuntime) -> str:
    return hashlib.sha256(runtime.model_dump_json().encode()).hexdigest()[:16]


def describe_exit(code: int | None) -> str:
    if code is None:
        return "exited"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"
