"""What a request id costs the front door: the same hot request with and without it, in-process.

    python bench/request_id.py [--requests 200000] [--rounds 5]

A ``FrontDoor`` around a raw endpoint that answers a 2-byte body (the cheapest hot path there
is), driven by a fake ``receive``/``send`` so that only Python's work is timed: ``door(...)`` (the
id read or made, the context variable set and reset, the header added to the answer) against
``door._serve(...)`` (the same dispatch without any of it), and with ``access_log`` on (one JSON
line a request, to a throw-away stream). Rounds alternate; the table has each row's median of the
per-round means in µs per request and the least of them (the run least disturbed by
neighbours), each with its difference to the first row. docs/benchmarks.md has the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import time
from collections.abc import Callable, Coroutine
from typing import Any

from stackd.api.dispatch import FrontDoor
from stackd.api.request_body import BodyLimits
from stackd.logs import records

Scope = dict[str, Any]


async def endpoint(scope: Scope, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


async def receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def send(message: dict[str, Any]) -> None:
    return None


def allow(_: Any) -> None:
    return None


def scope(request_id: bytes | None) -> Scope:
    headers = [
        (b"host", b"127.0.0.1:8001"),
        (b"content-type", b"application/json"),
        (b"content-length", b"0"),
    ]
    if request_id is not None:
        headers.append((b"x-request-id", request_id))
    return {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": headers}


async def per_request_us(call: Callable[[Scope], Coroutine[Any, Any, None]], make: Scope, n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        await call(dict(make))
    return (time.perf_counter() - started) / n * 1e6


async def main(n: int, rounds: int) -> None:
    records.configure(stream=io.StringIO())  # JSON lines to nowhere: what formatting costs
    limits = BodyLimits(1 << 20, 1 << 20)
    hot = {("POST", "/v1/chat/completions"): endpoint}
    door = FrontDoor(endpoint, hot, allow, limits)
    logged = FrontDoor(endpoint, hot, allow, limits, access_log=True)
    rows: dict[str, Callable[[Scope], Coroutine[Any, Any, None]]] = {
        "no request id (door._serve)": lambda s: door._serve(s, receive, send),
        "request id made (door)": lambda s: door(s, receive, send),
        "caller's id kept (door)": lambda s: door(s, receive, send),
        "request id + access line": lambda s: logged(s, receive, send),
    }
    scopes = {name: scope(b"3f2c9a1e7b4d4c8e9f0a1b2c3d4e5f60" if "kept" in name else None) for name in rows}
    results: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(rounds):
        for name, call in rows.items():
            results[name].append(await per_request_us(call, scopes[name], n))
    base = statistics.median(results["no request id (door._serve)"])
    least = min(results["no request id (door._serve)"])
    print(f"{'':32} {'median µs':>10} {'added':>7} {'min µs':>8} {'added':>7}")
    for name, values in results.items():
        median, low = statistics.median(values), min(values)
        print(f"{name:32} {median:10.2f} {median - base:7.2f} {low:8.2f} {low - least:7.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.rounds))
