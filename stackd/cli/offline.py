"""``stackd plan`` without a daemon: load the config, read (or script) the GPU, run the pure planner
from an empty observed state, and return the plan in the API's JSON shape."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, cast

from stackd.config.loader import load_config
from stackd.hardware.probe import make_gpu_reader, read_hardware
from stackd.planner import plan_switch
from stackd.planner.plan import ObservedState, Plan
from stackd.planner.views import plan_json

if TYPE_CHECKING:
    from stackd.cli.shapes import PlanShape


def offline_plan(
    config_path: Path, stack: str, *, gpu_total_gb: float | None = None, gpu_scenario: Path | None = None
) -> PlanShape:
    config = load_config(config_path)
    reader = make_gpu_reader(str(gpu_scenario) if gpu_scenario else None, gpu_total_gb)
    hardware = read_hardware(reader)
    if gpu_total_gb is not None:
        # --gpu-total-gb answers "what if my card had N GB": it overrides the file's total too.
        config = config.model_copy(update={"gpu": config.gpu.model_copy(update={"total_gb": gpu_total_gb})})
    return plan_shape(plan_switch(config, ObservedState(), stack, hardware))


def plan_shape(plan: Plan) -> PlanShape:
    """The JSON the daemon answers a dry run with (``plan_json``): the shape ``plan_renderable`` reads."""
    return cast("PlanShape", plan_json(plan))
