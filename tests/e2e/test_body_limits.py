"""A real ``stackd serve``: a 100 MB body, with or without the token, never lands in its memory.

Before the front door (``stackd.api.dispatch``) a 100 MB unauthenticated body to
``/model-stacks/switch`` was read and parsed before the token was checked: peak RSS 696 MB, and
about 570 MB kept afterwards (issue 13)."""

from __future__ import annotations

import contextlib
import select
import socket
from pathlib import Path
from urllib.parse import urlsplit

from tests.e2e.conftest import Daemon

MIB = 1 << 20
SIZE = 100 * MIB


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def post_huge(url: str, path: str, headers: dict[str, str]) -> tuple[int, int]:
    """POST a 100 MB body, a MiB at a time, until the daemon answers or closes; (status, bytes sent)."""
    parts = urlsplit(url)
    head = f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    head += f"Content-Length: {SIZE}\r\n\r\n"
    chunk = b"x" * MIB
    sent = 0
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(head.encode())
        while sent < SIZE and not select.select([sock], [], [], 0)[0]:
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        answer = b""
        with contextlib.suppress(ConnectionResetError):
            while b"\r\n" not in answer:
                data = sock.recv(4096)
                if not data:
                    break
                answer += data
    return int(answer.split(b" ", 2)[1]), sent


def test_a_100_mb_body_is_refused_unread_with_401_or_413_and_peak_rss_stays_flat(daemon: Daemon) -> None:
    before = peak_rss_mib(daemon.proc.pid)
    status, sent = post_huge(daemon.url, "/model-stacks/switch", {})
    assert status == 401
    assert sent < SIZE  # the daemon answered and closed: the body was never uploaded, let alone read
    status, sent = post_huge(daemon.url, "/model-stacks/switch", {"Authorization": f"Bearer {daemon.token}"})
    assert status == 413 and sent < SIZE
    status, _ = post_huge(daemon.url, "/v1/chat/completions", {})
    assert status == 401
    status, _ = post_huge(daemon.url, "/v1/chat/completions", {"Authorization": f"Bearer {daemon.token}"})
    assert status == 413
    grown = peak_rss_mib(daemon.proc.pid) - before
    assert grown < 30, f"the daemon's peak RSS grew {grown:.0f} MiB"
