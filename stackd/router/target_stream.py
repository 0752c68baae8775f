"""One admitted target's stream: its limits, the text held back, and its verdict (``verdicts``).

Ends silently (no item) when it failed before any text reached the caller. Unless the target
allows an empty answer, leading whitespace is held back until a visible character comes: a stream
that ends blank is then ``empty`` and falls through like any failure, having sent nothing. The
first text must come within ``first_token_s``, the whole answer within ``total_s``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from contextlib import AsyncExitStack

from stackd.config.reason import Timeouts
from stackd.roles import InFlight
from stackd.router.backends import Backend
from stackd.router.local_queue import LocalQueue, LocalQueueFull
from stackd.router.types import (
    BackendError,
    ChatRequest,
    Completion,
    FailureKind,
    RouterStreamItem,
    StreamBroken,
    StreamDone,
    StreamEvent,
    StreamFinish,
    TextDelta,
)
from stackd.router.verdicts import Admitted, blank, close_quietly, escaped, failed, finished


class HeldText:
    """The stream's text so far and how much of it reached the caller."""

    def __init__(self, allow_empty: bool) -> None:
        self.pieces: list[str] = []
        self.sent = 0  # how many of ``pieces`` reached the caller
        self._allow_empty = allow_empty

    def add(self, delta: TextDelta) -> TextDelta | None:
        """What to send the caller now: None while only whitespace came."""
        self.pieces.append(delta.text)
        if self.sent or self._allow_empty or not blank(delta.text):
            held, self.sent = self.pieces[self.sent :], len(self.pieces)
            return delta if len(held) == 1 else TextDelta("".join(held))
        return None


async def stream_target(
    attempt: Admitted, request: ChatRequest, timeouts: Timeouts, queue: LocalQueue, in_flight: InFlight
) -> AsyncGenerator[RouterStreamItem, None]:
    """Text deltas, then ``StreamDone``; ``StreamBroken`` when it failed after text was sent."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(timeouts.first_token_s, timeouts.total_s)
    first_token_ms: float | None = None
    held = HeldText(attempt.target.allow_empty)
    verdict = False
    events = attempt.backend.stream(request)
    async with AsyncExitStack() as resources:
        resources.push_async_callback(close_quietly, events)
        resources.enter_context(in_flight.using(attempt.model))
        try:
            if attempt.target.queued:
                await resources.enter_async_context(queue.slot(timeouts.first_token_s))
            while True:
                event = await next_event(events, deadline, first_token_ms is None, attempt.backend)
                if isinstance(event, TextDelta):
                    if first_token_ms is None:
                        first_token_ms = attempt.elapsed_ms()
                        deadline = loop.time() - first_token_ms / 1000 + timeouts.total_s
                    shown = held.add(event)
                    if shown is not None:
                        yield shown
                elif isinstance(event, StreamFinish):
                    verdict = True
                    finish = Completion(
                        "".join(held.pieces), event.finish_reason, event.usage, event.tool_calls
                    )
                    answer = finished(attempt, finish, first_token_ms, request)
                    if answer is not None:
                        yield StreamDone(answer)
                    return
        except LocalQueueFull as exc:
            attempt.log.skipped(attempt.target, str(exc))
        except BackendError as error:
            verdict = True
            failed(attempt, error, first_token_ms, broken=bool(held.sent))
            if held.sent:
                target, log = attempt.target, attempt.log
                yield StreamBroken(target.strategy, attempt.backend.name, str(error), tuple(log.attempts))
        finally:
            if not verdict:
                attempt.circuit.abandon()


async def next_event(
    events: AsyncGenerator[StreamEvent, None], deadline: float, first: bool, backend: Backend
) -> StreamEvent:
    """The backend's next event by ``deadline`` (loop time); every failure as a ``BackendError``."""
    try:
        async with asyncio.timeout_at(deadline):
            return await anext(events)
    except TimeoutError:
        what = "first token" if first else "end of the answer"
        raise BackendError(FailureKind.timeout, f"no {what} within its time limit") from None
    except StopAsyncIteration:
        raise BackendError(FailureKind.stream_cut, "stream ended without a finish") from None
    except BackendError:
        raise
    except Exception as exc:
        raise escaped(exc, backend) from None
