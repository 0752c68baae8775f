"""deploy/stackd.service passes ``systemd-analyze verify`` and carries the hardening it promises.

verify needs ExecStart's binary to exist: the unit is checked as a copy whose ExecStart names
this checkout's ``stackd`` (the only line changed). Any line verify prints fails the test, since
systemd only warns, exit 0, about an unknown key or a value it cannot parse.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import REPO, in_ci

UNIT = REPO / "deploy" / "stackd.service"
INSTALLED_STACKD = "/opt/stackd/.venv/bin/stackd"
STATE_DIR = "/var/lib/stackd"


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze") or (
        "/usr/bin/systemd-analyze" if Path("/usr/bin/systemd-analyze").exists() else None
    )
    if found is None:
        reason = "systemd-analyze not found; apt-get install -y systemd"
        if in_ci():
            pytest.fail(f"CI=true requires it: {reason}")
        pytest.skip(reason)
    return found


def directives(text: str) -> dict[str, list[str]]:
    """Every ``Key=value`` of the unit, by key, in file order (systemd allows repeated keys)."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def verify(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    unit = tmp_path / "stackd.service"
    unit.write_text(text, encoding="utf-8")
    return subprocess.run(
        [systemd_analyze(), "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )


def local_copy(text: str) -> str:
    stackd = Path(sys.executable).with_name("stackd")
    assert stackd.exists(), f"{stackd} missing: pip install -e . in this venv"
    assert text.count(INSTALLED_STACKD) == 1, f"ExecStart no longer names {INSTALLED_STACKD}"
    return text.replace(INSTALLED_STACKD, str(stackd))


def test_the_unit_verifies_without_a_warning(tmp_path: Path) -> None:
    done = verify(tmp_path, local_copy(UNIT.read_text(encoding="utf-8")))
    assert done.returncode == 0, done.stdout + done.stderr
    assert (done.stdout + done.stderr).strip() == ""


def test_verify_would_catch_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: a misspelt key and a bad value are reported."""
    text = local_copy(UNIT.read_text(encoding="utf-8"))
    broken = text.replace("ProtectSystem=strict", "ProtectSystem=strictly").replace(
        "NoNewPrivileges=", "NoNewPrivilege="
    )
    done = verify(tmp_path, broken)
    said = done.stdout + done.stderr
    assert "ProtectSystem" in said or "protect system" in said
    assert "NoNewPrivilege" in said


def test_the_unit_is_hardened_and_keeps_the_state_dir_writable() -> None:
    unit = directives(UNIT.read_text(encoding="utf-8"))
    assert int(unit["LimitNOFILE"][-1]) >= 65536
    assert unit["NoNewPrivileges"] == ["true"]
    assert unit["ProtectSystem"] == ["strict"]
    assert unit["Restart"] == ["on-failure"]
    # ProtectSystem=strict makes / read-only: the state dir must be writable again, and it must be
    # the one the daemon uses.
    assert f"STACKD_STATE_DIR={STATE_DIR}" in unit["Environment"]
    writable = [p for value in unit.get("ReadWritePaths", []) for p in value.split()]
    state_directories = [f"/var/lib/{d}" for value in unit.get("StateDirectory", []) for d in value.split()]
    assert STATE_DIR in writable + state_directories
    assert unit["ExecReload"] == ["/bin/kill -HUP $MAINPID"]  # systemctl reload = re-read the config
    assert unit["KillMode"] == ["process"]  # engines outlive a crashed daemon and are adopted


EXPOSURE_LIMIT = 3.0  # systemd-analyze's "OK" band ends here


def exposure(tmp_path: Path, text: str) -> float:
    """The overall exposure ``systemd-analyze security --offline=true`` gives the unit: it reads
    the file alone, no running systemd needed."""
    unit = tmp_path / "stackd.service"
    unit.write_text(text, encoding="utf-8")
    done = subprocess.run(
        [systemd_analyze(), "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    found = re.search(r"Overall exposure level for stackd\.service: (\d+\.\d+)", done.stdout)
    assert found, done.stdout + done.stderr
    return float(found.group(1))


def test_the_units_security_exposure_is_ok(tmp_path: Path) -> None:
    score = exposure(tmp_path, local_copy(UNIT.read_text(encoding="utf-8")))
    assert score <= EXPOSURE_LIMIT, f"systemd-analyze security rates the unit {score}"


def test_the_exposure_check_can_fail(tmp_path: Path) -> None:
    """Without its sandboxing lines the same unit is rated far above the limit (8.8 before)."""
    kept = ("User=", "ExecStart=", "NoNewPrivileges=", "ProtectSystem=", "Type=", "[")
    text = local_copy(UNIT.read_text(encoding="utf-8"))
    service = text.split("[Service]")[1].split("[Install]")[0]
    bare = "\n".join(line for line in service.splitlines() if line.startswith(kept))
    assert exposure(tmp_path, "[Service]\n" + bare + "\n") > EXPOSURE_LIMIT


def test_the_sandbox_leaves_what_stackd_needs() -> None:
    """Hardening that would break stackd stays out: the Docker socket (the group, AF_UNIX), the
    NVIDIA device nodes for NVML and the engines (no PrivateDevices, the nvidia groups allowed),
    engines as children that outlive a crash (KillMode=process), the state dir, /proc/meminfo
    for the RAM ledger and other users' processes for the GPU ledger."""
    unit = directives(UNIT.read_text(encoding="utf-8"))
    assert unit["SupplementaryGroups"] == ["docker"]
    assert "PrivateUsers" not in unit  # would unmap the docker group
    families = unit["RestrictAddressFamilies"][-1].split()
    assert {"AF_UNIX", "AF_INET", "AF_INET6"} <= set(families)
    assert unit.get("PrivateDevices", ["false"]) == ["false"]
    allowed = " ".join(unit["DeviceAllow"])
    assert "char-nvidia-frontend rw" in allowed and "char-nvidia-uvm rw" in allowed
    assert "ProcSubset" not in unit and unit.get("ProtectProc", ["default"]) == ["default"]
    assert "MemoryDenyWriteExecute" not in unit  # CUDA's JIT maps writable code
    assert "/var/lib/stackd" in unit["ReadWritePaths"]
    assert unit["KillMode"] == ["process"]
    assert unit["CapabilityBoundingSet"] == [""]  # a non-root user needs none
