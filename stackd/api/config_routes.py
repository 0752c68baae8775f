"""``POST /config/reload``: re-read the config file as a transaction.

A file with problems is refused (422, every problem listed) and the daemon keeps the config it
runs; a valid one is adopted between switches, in one swap of the daemon's ``LiveConfig``. Members added or removed take effect at the next
switch (switching to the active stack applies them).

The file is read, parsed and validated in a worker thread: a 10 MB file kept the event loop (and
``/healthz``, and every request in flight) waiting 14 s when it was read on it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from fastapi import APIRouter, Depends

from stackd.api.answers import ReloadAnswer, documented
from stackd.config.models import StacksConfig
from stackd.services import Services

log = logging.getLogger("stackd.config")


async def reload_config(services: Services, load: Callable[[], StacksConfig]) -> dict[str, object]:
    config = await asyncio.to_thread(load)  # raises ConfigError: nothing below runs, nothing changes
    # One swap of the daemon's live config, on the manager's worker: the router follows in the
    # same step, and the API reads it, so no call sees two configs at once.
    await services.manager.replace_config(config)
    log.info("config reloaded from %s", services.settings.config)
    return {"reloaded": str(services.settings.config), "stacks": list(config.stacks)}


def build_config_router(
    services: Services, write: Callable[..., None], load: Callable[[], StacksConfig]
) -> APIRouter:
    router = APIRouter()

    @router.post(
        "/config/reload",
        dependencies=[Depends(write)],
        response_model=None,
        responses=documented(ReloadAnswer),
    )
    async def reload() -> dict[str, object]:
        return await reload_config(services, load)

    return router
