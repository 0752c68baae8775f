"""Usage survives a SIGKILL (issue 21, item 6): a real ``stackd serve`` over an OpenAI simulator,
four clients calling ``/tools/reason`` without pause, the daemon SIGKILLed ``KILLS`` times and
restarted on the same state dir. Each client sends its own ``X-Request-ID`` and keeps the ids it
got an answer for; afterwards every one of them is in the ``usage`` table: an answered call is
in the ledger's journal before its answer leaves the daemon, and each start replays the journal
a kill left into SQLite.

Measured before the ledger's group commit (a flush once a second): 10 kills lost about half of
the answered calls."""

from __future__ import annotations

import random
import sqlite3
import threading
import time
import uuid
from pathlib import Path

import httpx

from stackd.sim import OpenAISim
from stackd.state.keys import KeyedUsageStore, KeyStore
from tests.e2e.conftest import SOLO_REMOTE_CONFIG, Daemon, start_daemon
from tests.e2e.daemon_process import kill

KILLS = 5
CLIENTS = 4


class Clients:
    """Callers that keep calling whatever daemon runs now, and note the ids answered."""

    def __init__(self) -> None:
        self.daemon: Daemon | None = None
        self.answered: set[str] = set()
        self.refused = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._call, daemon=True) for _ in range(CLIENTS)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)

    def _call(self) -> None:
        with httpx.Client(timeout=5) as http:
            while not self._stop.is_set():
                daemon = self.daemon
                if daemon is None:
                    time.sleep(0.01)
                    continue
                request_id = uuid.uuid4().hex
                try:
                    r = http.post(
                        f"{daemon.url}/tools/reason",
                        json={"problem": "Why is the sky blue?", "max_tokens": 8},
                        headers={"Authorization": f"Bearer {daemon.token}", "X-Request-ID": request_id},
                    )
                except httpx.HTTPError:
                    with self._lock:
                        self.refused += 1
                    time.sleep(0.01)
                    continue
                if r.status_code == 200 and r.json().get("answer"):
                    assert r.headers["X-Request-ID"] == request_id
                    with self._lock:
                        self.answered.add(request_id)


def ledger_ids(db: Path) -> set[str]:
    """The answered calls in the ledger as the next daemon finds it: the journal the last SIGKILL
    left is replayed into SQLite when the store opens."""
    keys = KeyStore(db)
    KeyedUsageStore(db, keys).close()
    keys.close()
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT request_id, answered FROM usage WHERE request_id IS NOT NULL").fetchall()
    return {request_id for request_id, answered in rows if answered}


def test_sigkills_under_load_lose_no_answered_call_from_the_usage_ledger(tmp_path: Path) -> None:
    rng = random.Random(21)
    clients = Clients()
    with OpenAISim.start_in_thread() as sim:
        config = tmp_path / "stacks.yaml"
        config.write_text(SOLO_REMOTE_CONFIG.format(url=sim.url))
        clients.daemon = start_daemon(tmp_path, "--no-periodic", config=str(config))
        clients.start()
        try:
            for _ in range(KILLS):
                time.sleep(rng.uniform(0.5, 1.5))
                daemon = clients.daemon
                kill(daemon)  # SIGKILL: no shutdown code runs, no flush
                clients.daemon = start_daemon(tmp_path, "--no-periodic", config=str(config))
            time.sleep(0.5)
        finally:
            clients.stop()
            kill(clients.daemon)
    ledger = ledger_ids(tmp_path / "state" / "stackd.db")
    missing = clients.answered - ledger
    print(f"{len(clients.answered)} answered, {len(ledger)} in the ledger, {clients.refused} refused")
    assert len(clients.answered) >= 50 * KILLS // 5, "too few calls to show anything"
    assert clients.refused > 0, "no call was in flight at a kill"
    assert not missing, f"{len(missing)} of {len(clients.answered)} answered calls are not in usage"
