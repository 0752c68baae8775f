"""The data path's HTTP client against aiohttp's, on one simulator, in one run.

    .venv/bin/python bench/http_client.py [--calls 3000] [--rounds 5]

One OpenAI simulator (zero added latency, its own process); in this process, under uvloop, the
same POST of a chat request sent ``--calls`` times by 16 concurrent callers (then by one) through
aiohttp's ``ClientSession`` (as the floor of ``bench/gateway.py`` uses it, and as stackd's backends
did) and through ``stackd.router.http_client.HttpClient``, rounds alternated; each answer is read
whole. Prints the CPU time of this process per call (``time.process_time``: the simulator's is not
counted), the least and the median of the rounds. docs/benchmarks.md has the method and figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from pathlib import Path

import aiohttp
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gateway as g  # the harness beside this file: its simulator

from stackd.router.http_client import HttpClient

BODY = json.dumps({"model": "m", "messages": [{"role": "user", "content": "Why is the sky blue?"}]}).encode()
HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer bench"}


async def cpu_per_call(call: Callable[[], Awaitable[bytes]], calls: int, callers: int) -> float:
    async def caller(n: int) -> None:
        for _ in range(n):
            answer = await call()
            assert answer.startswith(b"{"), answer[:80]

    started = time.process_time()
    await asyncio.gather(*(caller(calls // callers) for _ in range(callers)))
    return (time.process_time() - started) / (calls // callers * callers) * 1e6


async def main(calls: int, rounds: int) -> None:
    with ExitStack() as stack:
        url = f"{g.start_sim(stack)}/v1/chat/completions"
        session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
        client = HttpClient(connect_s=5)

        async def with_aiohttp() -> bytes:
            async with session.post(url, data=BODY, headers=HEADERS, allow_redirects=False) as answer:
                return await answer.read()

        async def with_stackd() -> bytes:
            async with client.post(url, BODY, HEADERS) as answer:
                return await answer.read()

        clients = {"aiohttp ClientSession": with_aiohttp, "stackd HttpClient": with_stackd}
        for callers in (16, 1):
            results: dict[str, list[float]] = {name: [] for name in clients}
            for call in clients.values():  # warm-up: connections made, code paths hot
                await cpu_per_call(call, calls // 4, callers)
            for _ in range(rounds):
                for name, call in clients.items():
                    results[name].append(await cpu_per_call(call, calls, callers))
            for name, values in results.items():
                print(
                    f"{name:24} {callers:2} callers  CPU per call: least {min(values):6.1f} us,"
                    f" median {statistics.median(values):6.1f} us"
                )
        await session.close()
        await client.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    uvloop.install()
    asyncio.run(main(args.calls, args.rounds))
