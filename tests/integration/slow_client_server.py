"""A uvicorn server with the daemon's HTTP settings over a tiny app, for the slow-client tests.

``python -m tests.integration.slow_client_server PORT TIMEOUT_S [plain]``: ``GET /healthz``
answers at once, ``GET /slow`` after 1.5 s. ``plain`` serves with uvicorn's defaults instead
(the daemon before its bounds), for the comparison in docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import uvicorn

from stackd.api.http_server import server_config


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    if scope["path"] == "/slow":
        await asyncio.sleep(1.5)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


def main() -> None:
    port, timeout_s = int(sys.argv[1]), float(sys.argv[2])
    options: dict[str, Any] = {"host": "127.0.0.1", "port": port, "log_level": "warning", "lifespan": "off"}
    if sys.argv[3:] == ["plain"]:
        config = uvicorn.Config(app, **options)
    else:
        config = server_config(app, request_read_timeout_s=timeout_s, **options)
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
