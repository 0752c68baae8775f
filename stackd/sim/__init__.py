"""Protocol-faithful simulators of the engines stackd talks to, with live fault injection.

    from stackd.sim import Fault, SimControl, OpenAISim, AnthropicSim, GeminiSim, OllamaSim

    async with OpenAISim() as sim:          # sim.url, sim.control, sim.requests
        await sim.set_fault(Fault.http500)

Every simulator also serves ``POST /_sim/fault`` and ``GET /_sim/state`` for other processes.
"""

from stackd.sim.anthropic import AnthropicSim
from stackd.sim.control import Fault, RecordedRequest, SimControl
from stackd.sim.gemini import GeminiSim
from stackd.sim.ollama import OllamaSim
from stackd.sim.openai import OpenAISim
from stackd.sim.runner import SIMULATORS, make_sim, run_sim
from stackd.sim.server import SimServer
from stackd.sim.thread import SimThread

__all__ = [
    "SIMULATORS",
    "AnthropicSim",
    "Fault",
    "GeminiSim",
    "OllamaSim",
    "OpenAISim",
    "RecordedRequest",
    "SimControl",
    "SimServer",
    "SimThread",
    "make_sim",
    "run_sim",
]
