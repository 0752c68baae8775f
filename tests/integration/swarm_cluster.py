"""A real 3-node Docker Swarm on this machine: one ``dockerd`` per network namespace.

The recipe of ../shared/research/swarm.md: a bridge in a namespace of its own (the root
namespace's FORWARD policy drops bridged traffic), one namespace per node with a veth on that
bridge, one ``dockerd`` per node started through ``nsenter --net`` (``ip netns exec`` remounts
/sys and dockerd then finds no devices cgroup) and ``unshare --uts`` (each node its own
hostname). One more veth joins the root namespace to the bridge, so that the test process, like
stackd on a manager host, reaches a node's address and host-mode published ports.

Every name carries a random prefix and the subnet is one no route of the host uses, so two
clusters (a test and a benchmark) never meet, and nothing here touches the shared test engine
(/tmp/stackd-dockerd) but to ``docker save`` the demo image from it. ``leftovers`` lists what a
teardown failed to remove: namespaces, interfaces, dockerds, mounts, cgroups, the directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import docker

CGROUP_ROOT = Path("/sys/fs/cgroup")
START_TIMEOUT_S = 30.0
HEARTBEAT_NS = 1_000_000_000


@dataclass(frozen=True)
class SwarmNode:
    index: int
    hostname: str
    address: str
    socket: Path
    gpus: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def client(self) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.url, version="auto", timeout=30)


def _sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=60)


def _free_subnet() -> str:
    routes = _sh("ip", "-4", "route", "show", "table", "all").stdout
    for _ in range(50):
        candidate = f"10.77.{secrets.randbelow(200) + 20}"
        if f"{candidate}." not in routes:
            return candidate
    raise RuntimeError("no free 10.77.x.0/24 subnet for a test swarm")


class SwarmCluster:
    """Build with ``start()``; ``stop()`` removes everything; ``leftovers()`` must then be []."""

    def __init__(self, gpu_node: int = 2, nodes: int = 3, image: str = "stackd-demo:latest") -> None:
        self.prefix = "sw" + secrets.token_hex(2)
        self.subnet = _free_subnet()
        self.dir = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-", dir="/tmp"))
        self.image = image
        self.netns_existed = Path("/run/netns").exists()
        self.nodes = [
            SwarmNode(
                index=i,
                hostname=f"{self.prefix}-node{i}",
                address=f"{self.subnet}.{i}",
                socket=self.dir / f"n{i}" / "docker.sock",
                gpus=("GPU-0",) if i == gpu_node else (),
                labels={"gpu": "rtx5090"} if i == gpu_node else {"role": "cpu"},
            )
            for i in range(1, nodes + 1)
        ]
        self.host_address = f"{self.subnet}.254"
        self._procs: dict[int, subprocess.Popen[bytes]] = {}

    # ---- names

    def ns(self, index: int) -> str:
        return f"{self.prefix}n{index}"

    @property
    def bridge_ns(self) -> str:
        return f"{self.prefix}br"

    @property
    def manager(self) -> SwarmNode:
        return self.nodes[0]

    def node(self, hostname: str) -> SwarmNode:
        return next(n for n in self.nodes if n.hostname == hostname)

    # ---- build

    def start(self) -> None:
        self._network()
        for node in self.nodes:
            self.start_dockerd(node)
        for node in self.nodes:
            self._wait_ready(node)
        self._form_swarm()
        self._load_image()

    def _network(self) -> None:
        br = self.bridge_ns
        _sh("ip", "netns", "add", br)
        _sh("ip", "-n", br, "link", "add", "br0", "type", "bridge")
        _sh("ip", "-n", br, "link", "set", "br0", "up")
        for node in self.nodes:
            ns, veth = self.ns(node.index), f"{self.prefix}v{node.index}"
            _sh("ip", "netns", "add", ns)
            _sh("ip", "-n", ns, "link", "set", "lo", "up")
            _sh("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
            _sh("ip", "link", "set", veth, "netns", br)
            _sh("ip", "-n", br, "link", "set", veth, "master", "br0", "up")
            _sh("ip", "-n", ns, "addr", "add", f"{node.address}/24", "dev", "eth0")
            _sh("ip", "-n", ns, "link", "set", "eth0", "up")
        host, peer = f"{self.prefix}h", f"{self.prefix}hp"
        _sh("ip", "link", "add", host, "type", "veth", "peer", "name", peer, "netns", br)
        _sh("ip", "-n", br, "link", "set", peer, "master", "br0", "up")
        _sh("ip", "addr", "add", f"{self.host_address}/24", "dev", host)
        _sh("ip", "link", "set", host, "up")

    def start_dockerd(self, node: SwarmNode) -> None:
        root = self.dir / f"n{node.index}"
        root.mkdir(exist_ok=True)
        config = {
            "data-root": str(root / "data"),
            "exec-root": str(root / "exec"),
            "pidfile": str(root / "dockerd.pid"),
            "hosts": [f"unix://{node.socket}"],
            "iptables": False,
            "ip-masq": False,
            "cgroup-parent": self.ns(node.index),
            "shutdown-timeout": 3,
            "node-generic-resources": [f"NVIDIA-GPU={gpu}" for gpu in node.gpus],
        }
        (root / "daemon.json").write_text(json.dumps(config))
        script = (
            f"hostname {node.hostname}; DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1 "
            f"exec dockerd --config-file {root / 'daemon.json'}"
        )
        log = (root / "dockerd.log").open("ab")
        self._procs[node.index] = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{self.ns(node.index)}", "unshare", "--uts", "sh", "-c", script],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()

    def _wait_ready(self, node: SwarmNode) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                client = node.client()
                try:
                    client.ping()
                    return
                finally:
                    client.close()
            except docker.errors.DockerException:
                if time.monotonic() > deadline:
                    log = (self.dir / f"n{node.index}" / "dockerd.log").read_text()[-2000:]
                    raise RuntimeError(f"dockerd of {node.hostname} did not start:\n{log}") from None
                time.sleep(0.1)

    def _form_swarm(self) -> None:
        manager = self.manager.client()
        try:
            addr = self.manager.address
            # A 1 s heartbeat (Swarm's default: 5 s) marks a lost node down in ~3 s, not ~10 s.
            manager.swarm.init(
                advertise_addr=addr, listen_addr=f"{addr}:2377", dispatcher_heartbeat_period=HEARTBEAT_NS
            )
            manager.swarm.reload()
            token = manager.swarm.attrs["JoinTokens"]["Worker"]
            for node in self.nodes[1:]:
                client = node.client()
                try:
                    client.swarm.join(
                        remote_addrs=[f"{addr}:2377"],
                        join_token=token,
                        advertise_addr=node.address,
                        listen_addr=f"{node.address}:2377",
                    )
                finally:
                    client.close()
            self._wait_nodes_ready(manager)
            for node in self.nodes:
                found = manager.nodes.get(node.hostname)
                spec = dict(found.attrs["Spec"])
                spec["Labels"] = dict(node.labels)
                found.update(spec)
        finally:
            manager.close()

    def _wait_nodes_ready(self, manager: docker.DockerClient, timeout_s: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            nodes = manager.nodes.list()
            ready = {
                n.attrs["Description"]["Hostname"] for n in nodes if n.attrs["Status"]["State"] == "ready"
            }
            if ready >= {n.hostname for n in self.nodes}:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"swarm nodes not ready: {sorted(ready)}")
            time.sleep(0.1)

    def _load_image(self) -> None:
        archive = self.dir / "image.tar"
        if not archive.exists():
            shared = docker.from_env()
            try:
                with archive.open("wb") as out:
                    for chunk in shared.images.get(self.image).save(named=True):
                        out.write(chunk)
            finally:
                shared.close()
        for node in self.nodes:
            client = node.client()
            try:
                with archive.open("rb") as data:
                    client.images.load(data.read())
            finally:
                client.close()

    # ---- node loss and return

    def kill_dockerd(self, node: SwarmNode) -> None:
        """SIGKILL the node's dockerd (its containers die with their shims below)."""
        pid = self._dockerd_pid(node)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc = self._procs.pop(node.index, None)
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        self._kill_cgroup(node)
        self._kill_shims(node)

    def restart_dockerd(self, node: SwarmNode) -> None:
        """Start a killed node's dockerd again and wait until the manager lists it ready: its
        data root keeps its swarm identity, so it rejoins as the same node (a test that kills a
        node gives it back for the tests after it)."""
        self.start_dockerd(node)
        self._wait_ready(node)
        manager = self.manager.client()
        try:
            self._wait_nodes_ready(manager, timeout_s=60)
        finally:
            manager.close()

    # ---- teardown

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            client = self.manager.client()
            try:
                for service in client.services.list():
                    service.remove()
            finally:
                client.close()
        for node in self.nodes:
            pid = self._dockerd_pid(node)
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        for node in self.nodes:
            proc = self._procs.pop(node.index, None)
            if proc is not None:
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
        for node in self.nodes:
            self._kill_cgroup(node)
            self._kill_shims(node)
        for mount in reversed(self._mounts()):
            _sh("umount", "-l", mount, check=False)
        for node in self.nodes:
            _sh("ip", "netns", "delete", self.ns(node.index), check=False)
        _sh("ip", "link", "delete", f"{self.prefix}h", check=False)
        _sh("ip", "netns", "delete", self.bridge_ns, check=False)
        for node in self.nodes:
            for cgroup in self._cgroups(node):
                for sub in sorted(cgroup.rglob("*"), key=lambda p: -len(p.parts)):
                    if sub.is_dir():
                        with contextlib.suppress(OSError):
                            sub.rmdir()
                with contextlib.suppress(OSError):
                    cgroup.rmdir()
        shutil.rmtree(self.dir, ignore_errors=True)
        netns = Path("/run/netns")
        if not self.netns_existed and netns.exists() and not any(netns.iterdir()):
            _sh("umount", str(netns), check=False)
            with contextlib.suppress(OSError):
                netns.rmdir()

    def leftovers(self) -> list[str]:
        left: list[str] = []
        namespaces = _sh("ip", "netns", "list", check=False).stdout
        left += [f"namespace {line.split()[0]}" for line in namespaces.splitlines() if self.prefix in line]
        links = _sh("ip", "-o", "link", "show", check=False).stdout
        left += [
            f"interface {line.split(':')[1].strip()}" for line in links.splitlines() if self.prefix in line
        ]
        left += [f"process {pid}: {cmd}" for pid, cmd in self._processes()]
        left += [f"mount {m}" for m in self._mounts()]
        for node in self.nodes:
            left += [f"cgroup {c}" for c in self._cgroups(node)]
        if self.dir.exists():
            left.append(f"directory {self.dir}")
        return left

    # ---- what belongs to this cluster

    def _dockerd_pid(self, node: SwarmNode) -> int | None:
        try:
            return int((self.dir / f"n{node.index}" / "dockerd.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def _cgroups(self, node: SwarmNode) -> list[Path]:
        return [c / self.ns(node.index) for c in CGROUP_ROOT.iterdir() if (c / self.ns(node.index)).exists()]

    def _kill_cgroup(self, node: SwarmNode) -> None:
        for cgroup in self._cgroups(node):
            for procs in cgroup.rglob("cgroup.procs"):
                with contextlib.suppress(OSError):
                    for pid in procs.read_text().split():
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(int(pid), signal.SIGKILL)

    def _kill_shims(self, node: SwarmNode) -> None:
        marker = str(self.dir / f"n{node.index}")
        for pid, cmd in self._processes():
            if marker in cmd:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while any(marker in cmd for _, cmd in self._processes()) and time.monotonic() < deadline:
            time.sleep(0.05)

    def _processes(self) -> list[tuple[int, str]]:
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            with contextlib.suppress(OSError):
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                if str(self.dir) in cmd or self.prefix + "n" in cmd:
                    found.append((int(entry.name), cmd.strip()))
        return found

    def _mounts(self) -> list[str]:
        mounts = []
        with open("/proc/self/mountinfo") as info:
            for line in info:
                point = line.split()[4]
                if point.startswith(str(self.dir)) or point.startswith(f"/run/netns/{self.prefix}"):
                    mounts.append(point)
        return mounts


@contextlib.contextmanager
def swarm_cluster(**kwargs: object) -> Iterator[SwarmCluster]:
    """A started cluster; raises AssertionError at exit when anything of it is left."""
    cluster = SwarmCluster(**kwargs)  # type: ignore[arg-type]
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
    left = cluster.leftovers()
    assert left == [], f"the test swarm left {left}"
