"""The errors a lease request ends with, and the HTTP status of each (``stackd/gpu/design.md``)."""

from __future__ import annotations

from typing import assert_never

from stackd.errors import NotFound, StackdError
from stackd.gpu.decide import Lease, LeaseRefusal


class LeaseRefused(StackdError):
    """The model cannot be leased in this stack (not a member, not on demand, not a GPU member,
    larger than the card can ever give it). 409: the request is well formed, the model's place in
    the stack is what conflicts with it (422 stays for a body that is not)."""

    status = 409


class LeaseUnavailable(StackdError):
    """The lease could not be served by its deadline (a lease or another process holds the
    memory), or GPU memory did not come back after a stop. ``retry_after_s`` says when to retry."""

    status = 503


def refusal_error(refusal: LeaseRefusal) -> StackdError:
    """The API's error for a refusal: 404 unknown model, 503 still waiting at the deadline, 409 otherwise."""
    match refusal.code:
        case "unknown_model":
            return NotFound(refusal.message)
        case "held" | "no_room":
            return LeaseUnavailable(
                refusal.message,
                code=refusal.code,
                holders=[lease_brief(h) for h in refusal.holders],
                retry_after_s=round(refusal.retry_after_s or 5.0, 1),
            )
        case "no_active_stack" | "not_member" | "not_on_demand" | "not_gpu" | "too_large":
            return LeaseRefused(refusal.message, code=refusal.code)
        case _:
            assert_never(refusal.code)


def lease_brief(lease: Lease) -> dict[str, object]:
    return {"lease_id": lease.id, "model": lease.model, "expires_at": lease.expires_at}
