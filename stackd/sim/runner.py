"""Serve one simulator until SIGINT/SIGTERM (``stackd sim KIND --port N --latency-ms X --fault MODE``)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys

from stackd.sim.anthropic import AnthropicSim
from stackd.sim.control import Fault, SimControl
from stackd.sim.gemini import GeminiSim
from stackd.sim.ollama import OllamaSim
from stackd.sim.openai import OpenAISim
from stackd.sim.server import SimServer

SIMULATORS: dict[str, type[SimServer]] = {
    "ollama": OllamaSim,
    "openai": OpenAISim,
    "anthropic": AnthropicSim,
    "gemini": GeminiSim,
}


def make_sim(
    kind: str, host: str = "127.0.0.1", port: int = 0, control: SimControl | None = None
) -> SimServer:
    """A simulator of ``kind`` (one of ``SIMULATORS``). Long-running ones do not record requests."""
    try:
        cls = SIMULATORS[kind]
    except KeyError:
        raise ValueError(f"unknown simulator {kind!r}; choose one of {', '.join(SIMULATORS)}") from None
    return cls(host, port, control, record=False)


async def serve_sim(sim: SimServer, stop: asyncio.Event) -> None:
    """Start ``sim``, print where it listens, and serve until ``stop`` is set."""
    async with sim:
        print(f"stackd sim {sim.kind} listening on {sim.url} (fault {sim.control.fault})", flush=True)
        await stop.wait()


def run_sim(kind: str, host: str, port: int, latency_ms: float, fault: str) -> None:
    """Serve a ``kind`` simulator on ``host:port`` until SIGINT or SIGTERM. Blocks."""
    control = SimControl(fault=Fault(fault), latency_ms=latency_ms)
    sim = make_sim(kind, host, port, control)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            if sys.platform != "win32":
                loop.add_signal_handler(signum, stop.set)
        await serve_sim(sim, stop)

    with contextlib.suppress(KeyboardInterrupt):  # Windows has no loop signal handlers
        asyncio.run(main())
