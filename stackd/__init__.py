"""stackd: run a hybrid GPU / CPU / cloud model stack on one AI workstation."""

import os
from pathlib import Path

__version__ = "0.1.0"

# Where a daemon listens and keeps its state unless told otherwise: read by the daemon's Settings
# and by the CLI, which must not build the settings model (pydantic) to start.
DEFAULT_PORT = 8001


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "stackd"
