"""Daemon settings: CLI flags with ``STACKD_*`` environment equivalents."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_PORT = 8001


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "stackd"


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(DEFAULT_PORT, ge=1, le=65535)
    config: Path = Path("config/model-stacks.yaml")
    state_dir: Path = Field(default_factory=default_state_dir)
    gpu_scenario: Path | None = None
    gpu_total_gb: float | None = Field(None, gt=0)
    docker_host: str | None = None  # None: the docker SDK reads DOCKER_HOST
    periodic: bool = True
    recover_on_start: bool = True

    @property
    def loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    @property
    def db_path(self) -> Path:
        return self.state_dir / "stackd.db"
