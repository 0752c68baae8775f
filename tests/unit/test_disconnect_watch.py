"""The raw routes' disconnect watch: a call whose client left is cancelled; a short call never
reads ``receive`` again; a watcher never outlives its call."""

from __future__ import annotations

import asyncio
import contextlib

from starlette.types import Message, Scope, Send

from stackd.api.raw_asgi import DisconnectWatch, Handler

AFTER_S = 0.02


class Client:
    """``receive`` after the body: ``http.disconnect`` once ``leave`` is set; counts its reads."""

    def __init__(self) -> None:
        self.leave = asyncio.Event()
        self.reads = 0

    async def receive(self) -> Message:
        self.reads += 1
        await self.leave.wait()
        return {"type": "http.disconnect"}


async def nothing_sent(message: Message) -> None:
    raise AssertionError(f"nothing is sent: {message}")


async def test_a_call_whose_client_leaves_is_cancelled_and_ends_quietly() -> None:
    watch, client = DisconnectWatch(AFTER_S), Client()
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def slow(scope: Scope, body: bytes, send: Send) -> None:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    call = asyncio.create_task(watch.run(slow, {}, b"{}", client.receive, nothing_sent))
    await started.wait()
    await asyncio.sleep(AFTER_S * 3)  # the watcher waits on receive by now
    client.leave.set()
    await asyncio.wait_for(call, 2)  # returns: nobody to answer, no CancelledError out
    assert cancelled.is_set() and client.reads == 1
    assert call.cancelling() == 0  # the cancellation was taken back


async def test_a_call_that_ends_before_the_watch_starts_never_reads_the_client_again() -> None:
    watch, client = DisconnectWatch(AFTER_S), Client()
    answered: list[bytes] = []

    async def quick(scope: Scope, body: bytes, send: Send) -> None:
        answered.append(body)

    for _ in range(50):
        await watch.run(quick, {}, b"{}", client.receive, nothing_sent)
    await asyncio.sleep(AFTER_S * 3)  # a sweep has come and gone
    assert answered == [b"{}"] * 50 and client.reads == 0


async def test_a_watcher_ends_with_its_call_and_a_later_disconnect_cancels_nothing() -> None:
    watch, client = DisconnectWatch(AFTER_S), Client()

    async def medium(scope: Scope, body: bytes, send: Send) -> None:
        await asyncio.sleep(AFTER_S * 4)  # long enough to be watched

    await asyncio.wait_for(watch.run(medium, {}, b"{}", client.receive, nothing_sent), 2)
    assert client.reads == 1  # it was watched ...
    client.leave.set()  # ... and the client leaving after the answer touches nothing
    await asyncio.sleep(AFTER_S * 2)
    assert not [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]


def slow(started: asyncio.Event) -> Handler:
    """A handler that sets ``started``, then works for 30 s."""

    async def handle(scope: Scope, body: bytes, send: Send) -> None:
        started.set()
        await asyncio.sleep(30)

    return handle


async def test_a_cancellation_from_elsewhere_is_not_swallowed() -> None:
    watch, client = DisconnectWatch(AFTER_S), Client()
    started = asyncio.Event()
    call = asyncio.create_task(watch.run(slow(started), {}, b"{}", client.receive, nothing_sent))
    await started.wait()
    call.cancel()  # the server shutting down, not the client leaving
    with contextlib.suppress(asyncio.CancelledError):
        await call
    assert call.cancelled()


async def test_calls_that_begin_at_different_times_are_each_watched_once_they_are_due() -> None:
    watch = DisconnectWatch(AFTER_S)
    clients = [Client() for _ in range(3)]
    ended: list[int] = []

    def ending(n: int) -> Handler:
        async def handle(scope: Scope, body: bytes, send: Send) -> None:
            try:
                await asyncio.sleep(30)
            finally:
                ended.append(n)

        return handle

    calls = []
    for n, client in enumerate(clients):
        calls.append(asyncio.create_task(watch.run(ending(n), {}, b"", client.receive, nothing_sent)))
        await asyncio.sleep(AFTER_S * 1.5)
    await asyncio.sleep(AFTER_S * 3)
    assert [c.reads for c in clients] == [1, 1, 1]
    clients[1].leave.set()
    await asyncio.wait_for(calls[1], 2)
    assert ended == [1] and not calls[0].done() and not calls[2].done()
    for call in (calls[0], calls[2]):
        call.cancel()
    await asyncio.gather(calls[0], calls[2], return_exceptions=True)


def test_a_watch_whose_loop_closed_with_its_sweep_pending_watches_on_the_next_loop() -> None:
    watch = DisconnectWatch(AFTER_S)

    async def quick(scope: Scope, body: bytes, send: Send) -> None:
        pass

    async def first_loop() -> None:
        await watch.run(quick, {}, b"", Client().receive, nothing_sent)  # its sweep is pending

    async def next_loop() -> int:
        client = Client()
        started = asyncio.Event()
        call = asyncio.create_task(watch.run(slow(started), {}, b"", client.receive, nothing_sent))
        await started.wait()
        await asyncio.sleep(AFTER_S * 3)
        client.leave.set()
        await asyncio.wait_for(call, 2)
        return client.reads

    asyncio.run(first_loop())
    assert asyncio.run(next_loop()) == 1
