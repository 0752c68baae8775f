"""A model's ``sampling:`` defaults put into every request whose caller left them out."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import replace

from stackd.config.models import Sampling
from stackd.router.backends.base import Backend
from stackd.router.types import ChatRequest, Completion, StreamEvent


def with_defaults(request: ChatRequest, sampling: Sampling) -> ChatRequest:
    """``request`` with each field it leaves unset taken from ``sampling``."""
    return replace(
        request,
        temperature=request.temperature if request.temperature is not None else sampling.temperature,
        top_p=request.top_p if request.top_p is not None else sampling.top_p,
        max_tokens=request.max_tokens if request.max_tokens is not None else sampling.max_tokens,
    )


class SampledBackend:
    """``inner`` with ``sampling`` filled into each request; everything else is ``inner``'s."""

    def __init__(self, inner: Backend, sampling: Sampling) -> None:
        self._inner = inner
        self._sampling = sampling
        self.name = inner.name
        self.request_model = inner.request_model

    def not_ready(self) -> str | None:
        return self._inner.not_ready()

    def unsupported(self, request: ChatRequest) -> str | None:
        return self._inner.unsupported(request)

    async def complete(self, request: ChatRequest) -> Completion:
        return await self._inner.complete(with_defaults(request, self._sampling))

    def stream(self, request: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        return self._inner.stream(with_defaults(request, self._sampling))
