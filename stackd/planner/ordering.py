"""The order of a switch's steps: make-before-break, and break-before-make when the card is full.

The default order is the one in docs/architecture.md ("Plan semantics"): pull, start/load/probe,
bind, unbind, stop. When old and new GPU members cannot be resident together, two stricter
orders free memory earlier:

* ``BREAK_BEFORE_MAKE``: before any start, every leaving GPU member gives up its roles (rebound
  to a model that is already up, or unbound until its new model is up) and stops. The
  orchestrator's current model is the exception: it stops only once the orchestrator role can
  move to a model that is up.
* ``ORCHESTRATOR_FIRST``: as above, then the orchestrator's new model starts first, the role
  moves to it and the old model stops, before the other members start.

Every order keeps two invariants that the property tests check: a role is bound only to a model
that is up (or startable on demand), and a model stops only when no role points at it.
"""

from __future__ import annotations

from dataclasses import dataclass

from stackd.config.models import Runtime, StacksConfig
from stackd.planner.members import (
    ORCHESTRATOR,
    holds_node_gpu,
    is_gpu,
    is_on_demand,
    start_step,
    startable_on_demand,
    stop_step,
    up_models,
)
from stackd.planner.plan import BindRole, ObservedState, ProbeRemote, PullModel, Step, UnbindRole


@dataclass(frozen=True)
class Ordering:
    """How early leaving GPU members give way to the members that replace them."""

    break_early: bool = False
    orchestrator_first: bool = False


MAKE_BEFORE_BREAK = Ordering()
BREAK_BEFORE_MAKE = Ordering(break_early=True)
ORCHESTRATOR_FIRST = Ordering(break_early=True, orchestrator_first=True)
ORDERINGS = (MAKE_BEFORE_BREAK, BREAK_BEFORE_MAKE, ORCHESTRATOR_FIRST)


def order_steps(
    config: StacksConfig, stack: str, observed: ObservedState, ordering: Ordering
) -> tuple[Step, ...]:
    """The steps that take ``observed`` to ``stack``, in ``ordering``. Pure."""
    return _StepBuilder(config, stack, observed).build(ordering)


class _StepBuilder:
    """Emits steps while tracking what they do to the role table and to the set of up models."""

    def __init__(self, config: StacksConfig, stack: str, observed: ObservedState) -> None:
        self.models = config.models
        self.target = config.stacks[stack]
        self.members = self.target.member_names
        self.steps: list[Step] = []
        self.bindings = dict(observed.bindings)
        self.up = set(up_models(config, observed))
        self.pulled = set(observed.pulled_tags) | set(observed.loaded_tags)

    def build(self, ordering: Ordering) -> tuple[Step, ...]:
        self._pull_missing()
        leaving = self._leaving()
        pending = self._pending_starts()
        for name in leaving:
            # A swarm GPU is free only once Swarm reports the old task gone: always break first.
            if (ordering.break_early and is_gpu(self.models[name])) or holds_node_gpu(self.models[name]):
                self._release(name)
        if ordering.orchestrator_first:
            new, old = self.target.roles.get(ORCHESTRATOR), self.bindings.get(ORCHESTRATOR)
            if new in pending and old in leaving and old in self.up:
                self._start(new)
                pending.remove(new)
                self._release(old)
        # Containers and engine processes first: they take longest to become ready, and Ollama
        # loads are cheap.
        for name in sorted(pending, key=lambda n: self.models[n].runtime == Runtime.ollama):
            self._start(name)
        for name in self.members:
            model = self.models[name]
            if model.remote is not None:
                self.steps.append(ProbeRemote(name, model.remote.required))
        for role, model_name in self.target.roles.items():
            if self.bindings.get(role) != model_name:
                self._bind(role, model_name)
        for role in list(self.bindings):
            if role not in self.target.roles and role != ORCHESTRATOR:
                self._unbind(role)
        for name in leaving:
            if name in self.up:
                self._stop(name)
        return tuple(self.steps)

    def _pull_missing(self) -> None:
        for name in self.members:
            ollama = self.models[name].ollama
            if ollama is not None and ollama.tag not in self.pulled:
                self.steps.append(PullModel(name, ollama.tag))
                self.pulled.add(ollama.tag)

    def _leaving(self) -> list[str]:
        """Up models that the target does not run (an Ollama tag the target also uses stays)."""
        target_tags = {self._tag(n) for n in self.members} - {None}
        out = []
        for name in self.up:
            model = self.models[name]
            if name in self.members or model.runtime == Runtime.remote:
                continue
            if model.ollama is not None and model.ollama.tag in target_tags:
                continue
            out.append(name)
        return sorted(out, key=list(self.models).index)

    def _pending_starts(self) -> list[str]:
        return [
            name
            for name in self.members
            if not is_on_demand(self.models[name])
            and self.models[name].runtime != Runtime.remote
            and name not in self.up
        ]

    def _available(self, name: str) -> bool:
        return name in self.up or startable_on_demand(self.models[name], self.pulled)

    def _release(self, name: str) -> None:
        """Move every role off ``name`` and stop it, unless the orchestrator has nowhere to go yet."""
        roles = [role for role, model in self.bindings.items() if model == name]
        if ORCHESTRATOR in roles:
            new = self.target.roles.get(ORCHESTRATOR)
            if new is None or not self._available(new):
                return
        for role in roles:
            new = self.target.roles.get(role)
            if new is not None and self._available(new):
                self._bind(role, new)
            else:
                self._unbind(role)  # bound again once its new model is up
        self._stop(name)

    def _start(self, name: str) -> None:
        step = start_step(name, self.models[name])
        if step is not None:
            self.steps.append(step)
            self.up.add(name)

    def _stop(self, name: str) -> None:
        model = self.models[name]
        step = stop_step(name, model)
        if step is None:
            return
        self.steps.append(step)
        # Unloading a tag takes down every model that shares it.
        tag = model.ollama.tag if model.ollama is not None else None
        self.up = {n for n in self.up if n != name and not (tag and self._tag(n) == tag)}

    def _tag(self, name: str) -> str | None:
        ollama = self.models[name].ollama
        return ollama.tag if ollama is not None else None

    def _bind(self, role: str, model: str) -> None:
        self.steps.append(BindRole(role, model))
        self.bindings[role] = model

    def _unbind(self, role: str) -> None:
        self.steps.append(UnbindRole(role))
        self.bindings.pop(role, None)
