"""Serve simulators until SIGINT/SIGTERM: one (``stackd sim KIND --port N --latency-ms X --fault MODE``),
or every one a config needs (``stackd sim demo [--config FILE]``, see ``stackd.sim.fleet``)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys

from stackd.errors import StackdError
from stackd.sim.anthropic import AnthropicSim
from stackd.sim.control import Fault, SimControl
from stackd.sim.fleet import Fleet
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
    kind: str,
    host: str = "127.0.0.1",
    port: int = 0,
    control: SimControl | None = None,
    models: list[str] | None = None,
) -> SimServer:
    """A simulator of ``kind`` (one of ``SIMULATORS``). Long-running ones do not record requests.
    ``models`` replaces the simulator's default model list (``/v1/models`` and the like)."""
    try:
        cls = SIMULATORS[kind]
    except KeyError:
        raise ValueError(f"unknown simulator {kind!r}; choose one of {', '.join(SIMULATORS)}") from None
    if models:
        return cls(host, port, control, models=models, record=False)
    return cls(host, port, control, record=False)


def banner(sim: SimServer, members: tuple[str, ...] = ()) -> str:
    used_by = f" for {', '.join(members)}" if members else ""
    return f"stackd sim {sim.kind} listening on {sim.url}{used_by} (fault {sim.control.fault})"


async def serve_sims(sims: list[tuple[SimServer, tuple[str, ...]]], stop: asyncio.Event) -> None:
    """Start every simulator, print one line per simulator with its URL, serve until ``stop``."""
    async with contextlib.AsyncExitStack() as stack:
        for sim, members in sims:
            try:
                await stack.enter_async_context(sim)
            except OSError as exc:
                raise StackdError(
                    f"stackd sim {sim.kind} cannot listen on {sim.host}:{sim.port}: "
                    f"{exc.strerror or exc}; stop what listens there"
                ) from exc
            print(banner(sim, members), flush=True)
        await stop.wait()


def run_sim(kind: str, host: str, port: int, latency_ms: float, fault: str) -> None:
    """Serve a ``kind`` simulator on ``host:port`` until SIGINT or SIGTERM. Blocks."""
    control = SimControl(fault=Fault(fault), latency_ms=latency_ms)
    _serve_until_signal([(make_sim(kind, host, port, control), ())])


def run_fleet(fleet: Fleet, latency_ms: float, fault: str) -> None:
    """Serve every simulator of ``fleet`` (each with its own control) until SIGINT or SIGTERM. Blocks."""
    for why in fleet.skipped:
        print(f"stackd sim: not simulated: {why}", flush=True)
    if not fleet.sims:
        raise StackdError("the config points at no loopback Ollama or remote endpoint: nothing to simulate")
    _serve_until_signal(
        [
            (
                make_sim(
                    spec.kind,
                    spec.host,
                    spec.port,
                    SimControl(fault=Fault(fault), latency_ms=latency_ms),
                    list(spec.served_models),
                ),
                spec.members,
            )
            for spec in fleet.sims
        ]
    )


def _serve_until_signal(sims: list[tuple[SimServer, tuple[str, ...]]]) -> None:
    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            if sys.platform != "win32":
                loop.add_signal_handler(signum, stop.set)
        await serve_sims(sims, stop)

    with contextlib.suppress(KeyboardInterrupt):  # Windows has no loop signal handlers
        asyncio.run(main())
