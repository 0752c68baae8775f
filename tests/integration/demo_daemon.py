"""The real daemon (``stackd.daemon.build_app``: real drivers, real routes) served in-process.

The app's lifespan runs as uvicorn would run it (recovery at start, router start and close), and
requests go through ``httpx.ASGITransport``: the same app as ``stackd serve``, without a port.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from stackd.daemon import build_app
from stackd.services import Services
from stackd.settings import Settings

SWITCH_TIMEOUT_S = 120.0


@dataclass
class InProcessDaemon:
    client: httpx.AsyncClient
    services: Services

    async def get(self, path: str) -> Any:
        answer = await self.client.get(path)
        answer.raise_for_status()
        return answer.json()

    async def switch(self, stack: str) -> dict[str, Any]:
        """``POST /model-stacks/switch`` and wait for the end; returns the switch as the API shows it."""
        answer = await self.client.post("/model-stacks/switch", json={"stack": stack})
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    async def bindings(self) -> tuple[str | None, dict[str, str]]:
        """(stack, role -> model) of ``GET /roles``."""
        table = await self.get("/roles")
        return table["stack"], {row["role"]: row["model"] for row in table["roles"]}


@asynccontextmanager
async def serve_in_process(config: Path, state_dir: Path, **settings: Any) -> AsyncIterator[InProcessDaemon]:
    """The daemon of ``config`` on ``state_dir``, started (recovered) and, on exit, shut down;
    ``settings`` override other ``Settings`` fields (``role_drain_s=0``)."""
    app = build_app(Settings(config=config, state_dir=state_dir, periodic=False, **settings))
    services: Services = app.state.services
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://stackd.test",
            headers={"Authorization": f"Bearer {services.token}"},
            timeout=SWITCH_TIMEOUT_S,
        ) as client,
    ):
        yield InProcessDaemon(client, services)
