"""Daemon settings: CLI flags with ``STACKD_*`` environment equivalents."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from stackd import DEFAULT_PORT as DEFAULT_PORT  # re-exported: its readers import it here
from stackd import default_state_dir as default_state_dir

MIB = 1 << 20


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(DEFAULT_PORT, ge=1, le=65535)
    config: Path = Path("config/model-stacks.yaml")
    state_dir: Path = Field(default_factory=default_state_dir)
    gpu_scenario: Path | None = None
    gpu_total_gb: float | None = Field(None, gt=0)
    periodic: bool = True
    recover_on_start: bool = True
    # Between a role swap and stopping the backends it replaced (stackd.daemon.ROLE_DRAIN_S); tests
    # whose members serve no client set 0.
    role_drain_s: float = Field(1.0, ge=0)
    # Request bodies past these are answered 413 (stackd.api.dispatch): the control API's are a
    # few hundred bytes; the data path's (/v1/*, /tools/*) carry whole conversations.
    max_body_bytes: int = Field(1 * MIB, ge=1)
    max_gateway_body_bytes: int = Field(16 * MIB, ge=1)
    # The daemon's log (stackd.logs): prompts and completions only when log_content; one line per
    # request (method, path, status, ms) when log_requests.
    log_content: bool = False
    log_requests: bool = False

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
