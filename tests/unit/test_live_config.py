"""One live config (issue 23 item 5): a reload swaps the daemon's ``LiveConfig`` once, on the
manager's worker, and the manager, the router and the API all read that one object."""

from __future__ import annotations

from pathlib import Path

from stackd.api.config_routes import reload_config
from stackd.config.live import LiveConfig
from stackd.config.models import StacksConfig
from stackd.router import ReasonRouter
from stackd.settings import Settings
from tests.unit.test_manager_world import close_all, make_world


def with_queue(config: StacksConfig, size: int) -> StacksConfig:
    reason = config.reason.model_copy(
        update={"local_queue": config.reason.local_queue.model_copy(update={"size": size})}
    )
    return config.model_copy(update={"reason": reason})


async def test_a_reload_swaps_one_config_that_manager_router_and_api_read(tmp_path: Path) -> None:
    world = make_world(tmp_path)
    try:
        manager = world.manager()
        router = ReasonRouter(manager.live_config, manager.live_roles)
        services = world.services(manager, Settings(state_dir=tmp_path / "state"), "t", router=router)
        new = with_queue(world.config, world.config.reason.local_queue.size + 7)
        seen: list[tuple[bool, bool]] = []
        # What a reader sees at the swap itself: the manager and the router already on the new file.
        manager.live_config.on_swap(
            lambda _old, cfg: seen.append((manager.config is cfg, router.config is cfg))
        )
        answer = await reload_config(services, lambda: new)
        assert answer["stacks"] == list(new.stacks)
        assert seen == [(True, True)]
        assert manager.config is router.config is services.config is new
        assert services.live_config is manager.live_config is router.live_config
    finally:
        await close_all(world)


def test_a_swap_calls_its_listeners_with_the_previous_and_the_new_config(tmp_path: Path) -> None:
    world = make_world(tmp_path)
    live = LiveConfig(world.config)
    calls: list[tuple[StacksConfig, StacksConfig]] = []
    live.on_swap(lambda old, new: calls.append((old, new)))
    new = with_queue(world.config, 99)
    assert live.swap(new) is world.config
    assert live.current is new and calls == [(world.config, new)]
