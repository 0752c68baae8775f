"""A model's ``sampling:`` defaults reach the engine only where the caller left a field out."""

from __future__ import annotations

from stackd.config.models import Sampling
from stackd.router.backends.sampling import with_defaults
from stackd.router.types import ChatRequest


def test_unset_fields_take_the_models_defaults() -> None:
    request = ChatRequest([{"role": "user", "content": "2+3?"}])
    filled = with_defaults(request, Sampling(temperature=0, max_tokens=64))
    assert (filled.temperature, filled.max_tokens, filled.top_p) == (0, 64, None)
    assert filled.messages == request.messages


def test_the_callers_values_win() -> None:
    request = ChatRequest([{"role": "user", "content": "2+3?"}], max_tokens=8, temperature=0.7, top_p=0.9)
    filled = with_defaults(request, Sampling(temperature=0, top_p=0.5, max_tokens=64))
    assert (filled.temperature, filled.max_tokens, filled.top_p) == (0.7, 8, 0.9)
