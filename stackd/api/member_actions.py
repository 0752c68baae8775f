"""The status page's member actions, behind the write token on any bind:

- ``POST /members/{name}/restart``: stop and start an engine of the active stack (a process or
  a container), queued behind whatever the manager's worker runs; 409 during a switch or for a
  member stackd runs no engine of (Ollama, remote);
- ``POST /members/{name}/stop``: stop (or, on Ollama, unload) an on-demand member now, as its
  idle TTL would; 409 while a lease holds it (release the lease first), for an always-on member
  (a switch stops those) or during a switch.

The full log is ``GET /members/{name}/logs`` (``stackd.api.member_logs``).
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, Depends

from stackd.config.models import Lifecycle
from stackd.errors import Conflict, NotFound
from stackd.services import Services


def build_member_actions_router(services: Services, write: Callable[..., None]) -> APIRouter:
    router = APIRouter()

    def member_of_active(name: str) -> None:
        manager = services.manager
        stack = services.config.stacks.get(manager.active_stack or "")
        if stack is None or name not in stack.member_names:
            raise NotFound(f"{name} is not a member of the active stack ({manager.active_stack or 'none'})")

    @router.post("/members/{name}/restart", dependencies=[Depends(write)], response_model=None)
    async def restart(name: str) -> dict[str, object]:
        """Stop and start the member's engine; answers once it serves again."""
        member_of_active(name)
        await services.manager.restart(name)
        return {"member": name, "restarted": True}

    @router.post("/members/{name}/stop", dependencies=[Depends(write)], response_model=None)
    async def stop(name: str) -> dict[str, object]:
        """Stop (unload) an idle on-demand member; a lease starts it again."""
        member_of_active(name)
        if services.config.models[name].lifecycle != Lifecycle.on_demand:
            raise Conflict(f"{name} is always on in this stack: switch to a stack without it to stop it")
        leases = services.leases
        holds = leases.holds if leases is not None else None
        if holds is not None and holds(name):
            raise Conflict(f"a lease holds {name}: release the lease first")
        if not await services.manager.release(name, keep=holds):
            raise Conflict(f"a lease took {name} before it stopped: it keeps running")
        return {"member": name, "stopped": True}

    return router
