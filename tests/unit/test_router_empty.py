"""An answer without text is a failure of kind ``empty``: the chain moves on, the attempts say so.

Backends are scripted (the text each answers, as stream pieces); the chain has three models in
order m1, m2, m3, as in tests/unit/test_router_chain.py.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

import pytest

from stackd.config.models import StacksConfig
from stackd.errors import AllStrategiesFailed
from stackd.roles import LiveRoles, RoleTable
from stackd.router import ReasonRouter
from stackd.router.http_client import HttpClient
from stackd.router.types import (
    ChatRequest,
    Completion,
    FailureKind,
    RouterStreamItem,
    StreamBroken,
    StreamDone,
    StreamEvent,
    StreamFinish,
    TextDelta,
    Usage,
)
from tests.fake_clock import FakeClock
from tests.unit.test_router_chain import priced_model

MODELS = ["m1", "m2", "m3"]
REQUEST = ChatRequest([{"role": "user", "content": "2+3?"}], max_tokens=1)


class PiecesBackend:
    """Answers ``pieces`` (streamed one by one, or joined), with the usage the engine reports."""

    def __init__(self, name: str, pieces: list[str]) -> None:
        self.name = name
        self.request_model = name
        self.pieces = pieces
        self.calls = 0

    def not_ready(self) -> str | None:
        return None

    def unsupported(self, request: ChatRequest) -> str | None:
        return None

    async def complete(self, request: ChatRequest) -> Completion:
        self.calls += 1
        return Completion("".join(self.pieces), "length", Usage(7, len(self.pieces)))

    async def stream(self, request: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        self.calls += 1
        for piece in self.pieces:
            yield TextDelta(piece)
        yield StreamFinish("length", Usage(7, len(self.pieces)))


def make_config(allow_empty: bool = False) -> StacksConfig:
    return StacksConfig.model_validate(
        {
            "default_stack": "s",
            "roles": {"orchestrator": {"required": True}},
            "models": {name: priced_model(name) for name in MODELS},
            "stacks": {"s": {"roles": {"orchestrator": "m1"}, "members": MODELS}},
            "reason": {
                "strategies": {
                    "one": {"models": ["m1"], "allow_empty": allow_empty},
                    "two": {"models": ["m2"]},
                    "three": {"models": ["m3"]},
                },
                "default_chain": ["one", "two", "three"],
                "timeouts": {"connect_s": 1, "first_token_s": 5, "total_s": 5},
                "circuit": {"failure_threshold": 1, "cooldown_s": 30},
            },
            "presets": {
                "strict": {"model": "m1"},
                "lenient": {"model": "m1", "allow_empty": True},
            },
        }
    )


def make_router(config: StacksConfig, backends: dict[str, PiecesBackend]) -> ReasonRouter:
    roles = LiveRoles(RoleTable("s", {"orchestrator": "m1"}, frozenset(MODELS)))

    def factory(name: str, session: HttpClient) -> PiecesBackend:
        return backends[name]

    return ReasonRouter(config, roles, clock=FakeClock(), backend_factory=factory)


def chain(first: list[str]) -> dict[str, PiecesBackend]:
    return {
        "m1": PiecesBackend("m1", first),
        "m2": PiecesBackend("m2", ["5"]),
        "m3": PiecesBackend("m3", ["never asked"]),
    }


async def collect(router: ReasonRouter, route_name: str = "reason") -> list[RouterStreamItem]:
    route = router.gateway_route(route_name)
    return [item async for item in router.stream(route, REQUEST)]


@pytest.mark.parametrize("first", [[], [""], [" "], ["\n", "  "]])
async def test_an_empty_answer_moves_down_the_chain_and_is_reported_as_empty(first: list[str]) -> None:
    backends = chain(first)
    router = make_router(make_config(), backends)
    answer = await router.reason(REQUEST)
    await router.aclose()
    assert (answer.backend, answer.text) == ("m2", "5")
    failed = answer.attempts[0]
    assert (failed.backend, failed.status, failed.kind) == ("m1", "failed", FailureKind.empty)
    assert failed.reason == (
        "empty: m1 answered no text (finish_reason length); "
        "allow_empty: true on the strategy or preset accepts that"
    )
    assert [a.status for a in answer.attempts] == ["failed", "answered"]
    assert backends["m3"].calls == 0
    # What the empty answer cost is counted: a cloud backend bills its tokens all the same.
    tally = router.accounting.tallies[("one", "m1")]
    assert (tally.failures[FailureKind.empty], tally.answered) == (1, 0)
    assert (tally.prompt_tokens, tally.completion_tokens) == (7, len(first))
    assert tally.cost_usd == pytest.approx((7 * 1.0 + len(first) * 2.0) / 1e6)


async def test_an_empty_answer_does_not_open_the_backend_s_circuit() -> None:
    """failure_threshold is 1: a counted failure would open m1's circuit at once."""
    backends = chain([])
    router = make_router(make_config(), backends)
    for _ in range(3):
        answer = await router.reason(REQUEST)
        assert answer.attempts[0].kind is FailureKind.empty
    await router.aclose()
    assert backends["m1"].calls == 3
    assert router.circuit("m1").to_dict()["state"] == "closed"


async def test_when_every_backend_answers_empty_the_503_says_empty_for_each() -> None:
    backends = {name: PiecesBackend(name, []) for name in MODELS}
    router = make_router(make_config(), backends)
    with pytest.raises(AllStrategiesFailed) as caught:
        await router.reason(REQUEST)
    await router.aclose()
    attempts = caught.value.to_dict()["attempts"]
    assert [(a["backend"], a["status"]) for a in attempts] == [(m, "failed") for m in MODELS]
    assert all(a["reason"].startswith("empty: ") for a in attempts)
    assert "m3 answered no text" in caught.value.message


async def test_allow_empty_on_a_strategy_or_preset_accepts_the_empty_answer() -> None:
    backends = chain([])
    router = make_router(make_config(allow_empty=True), backends)
    answer = await router.reason(REQUEST)
    assert (answer.backend, answer.text, [a.status for a in answer.attempts]) == ("m1", "", ["answered"])
    lenient = await router.invoke_model("lenient", REQUEST)
    assert (lenient.backend, lenient.text) == ("m1", "")
    with pytest.raises(AllStrategiesFailed, match="empty: m1 answered no text"):
        await router.invoke_model("strict", REQUEST)
    items = await collect(router, "lenient")
    await router.aclose()
    [done] = items
    assert isinstance(done, StreamDone) and done.answer.text == ""


@pytest.mark.parametrize("first", [[], [" "], ["\n", "\t "]])
async def test_a_stream_that_ends_blank_falls_through_having_sent_nothing(first: list[str]) -> None:
    backends = chain(first)
    router = make_router(make_config(), backends)
    items = await collect(router)
    await router.aclose()
    # Leading whitespace is held back: the caller sees only m2's answer, never m1's blanks.
    assert items[0] == TextDelta("5")
    done = items[-1]
    assert isinstance(done, StreamDone)
    assert (done.answer.backend, done.answer.text) == ("m2", "5")
    assert [(a.backend, a.status, a.kind) for a in done.answer.attempts] == [
        ("m1", "failed", FailureKind.empty),
        ("m2", "answered", None),
    ]


async def test_held_whitespace_reaches_the_caller_with_the_first_visible_text() -> None:
    backends = chain(["\n", " ", "Paris", " is"])
    router = make_router(make_config(), backends)
    items = await collect(router)
    await router.aclose()
    assert items[:2] == [TextDelta("\n Paris"), TextDelta(" is")]
    done = items[-1]
    assert isinstance(done, StreamDone) and done.answer.text == "\n Paris is"


async def test_once_text_was_sent_a_blank_rest_is_an_answer_not_a_failure() -> None:
    backends = chain(["5", " ", "\n"])
    router = make_router(make_config(), backends)
    items = await collect(router)
    await router.aclose()
    assert not any(isinstance(i, StreamBroken) for i in items)
    done = items[-1]
    assert isinstance(done, StreamDone) and (done.answer.backend, done.answer.text) == ("m1", "5 \n")
