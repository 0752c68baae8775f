"""The engines a killed daemon left behind, read at the first call after a start.

Every recorded engine that still runs (same PID, same start time) is kept for adoption by its
member (``stackd.drivers.process``); records of dead ones are dropped; an engine of this state
dir that has no record (spawned in the instant before the record was written) is stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable, Collection

from stackd.drivers import process_group as pg
from stackd.drivers.process_engine import ProcessJournal
from stackd.state.processes import ProcessRecord

log = logging.getLogger("stackd.process")


async def surviving_records(journal: ProcessJournal) -> list[ProcessRecord]:
    """The recorded engines that still run; the records of the others are forgotten."""
    alive = []
    for rec in await asyncio.to_thread(journal.all):
        if pg.is_alive(rec.pid, rec.create_time):
            alive.append(rec)
        else:
            await asyncio.to_thread(journal.forget, rec.model, rec.pid)
    return alive


async def stop_strays(owner: str, known: Collection[int], sleep: Callable[[float], Awaitable[None]]) -> None:
    """Stop each process group leader of this state dir (``owner``) that is not in ``known``."""
    for pid, name in await asyncio.to_thread(pg.owned_processes, owner):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if pid not in known and os.getpgid(pid) == pid:
                log.warning(
                    "stopping engine process %d of %s: it has no record (stackd died as it started it)",
                    pid,
                    name,
                )
                await pg.stop_group(pid, 5.0, sleep)
