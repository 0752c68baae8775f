"""The daemon's start-up guards: token file, non-loopback bind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from stackd.api.auth import load_or_create_token
from stackd.daemon import UnsafeBind, build_services
from stackd.settings import Settings


def test_non_loopback_bind_without_an_explicit_token_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STACKD_TOKEN", raising=False)
    settings = Settings(host="0.0.0.0", state_dir=tmp_path / "state", gpu_total_gb=32)
    with pytest.raises(UnsafeBind, match="STACKD_TOKEN"):
        build_services(settings)


def test_token_file_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    token, source = load_or_create_token(tmp_path / "state", env={})
    path = tmp_path / "state" / "token"
    assert source == str(path) and len(token) >= 32
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert load_or_create_token(tmp_path / "state", env={}) == (token, str(path))
    assert load_or_create_token(tmp_path / "state", env={"STACKD_TOKEN": "from-env"}) == (
        "from-env",
        "STACKD_TOKEN",
    )


@pytest.mark.parametrize(
    "host, loopback",
    [("127.0.0.1", True), ("::1", True), ("localhost", True), ("0.0.0.0", False), ("192.168.1.10", False)],
)
def test_loopback_detection(host: str, loopback: bool) -> None:
    assert Settings(host=host).loopback is loopback
