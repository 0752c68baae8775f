"""The cluster's nodes as ``stackd plan`` (the plan's per-node ledger) and ``stackd status`` (the
observation: where each member runs) print them (docs/scale-out.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table

if TYPE_CHECKING:
    from stackd.cli.shapes import ClusterLedger, ClusterStatus


def cluster_ledger_table(ledger: ClusterLedger | None) -> Table | None:
    """One line per node: its GPUs, their VRAM, and the members on them (running, or placed by
    this switch); None without a cluster view."""
    if not ledger or not ledger.get("nodes"):
        return None
    table = Table(title="cluster nodes (docs/scale-out.md)")
    for column in ("node", "state", "GPUs", "VRAM each", "members on its GPUs", "free GPUs"):
        table.add_column(column, justify="right" if column in ("GPUs", "free GPUs") else "left")
    for node in ledger["nodes"]:
        members = ", ".join(
            f"{i['model']} ({i['gpus']})" + ("" if i["placed"] else " [cyan]new[/]") for i in node["items"]
        )
        free = node["gpus"] - sum(i["gpus"] for i in node["items"])
        table.add_row(
            node["hostname"],
            "up" if node["up"] else "[red]down[/]",
            str(node["gpus"]),
            f"{gpu_mib / 1024:g} GiB" if (gpu_mib := node.get("gpu_mib")) else "-",
            members or "-",
            str(free) if free >= 0 else f"[red]{free}[/] (Swarm will refuse)",
        )
    return table


def cluster_status_table(cluster: ClusterStatus | None) -> Table | None:
    """One line per node: state, address, labels, GPUs, and the members that run there."""
    if not cluster:
        return None
    if cluster.get("error"):
        table = Table(title="cluster")
        table.add_column("error")
        table.add_row(f"[red]{cluster['error']}[/]")
        return table
    placed: dict[str, list[str]] = {}
    for model, host in (cluster.get("placed") or {}).items():
        placed.setdefault(host, []).append(model)
    table = Table(title="cluster nodes")
    for column in ("node", "state", "address", "labels", "GPUs", "members"):
        table.add_column(column)
    for node in cluster.get("nodes") or []:
        table.add_row(
            node["hostname"],
            "up" if node["up"] else "[red]down[/]",
            node["address"],
            ", ".join(f"{k}={v}" for k, v in sorted((node.get("labels") or {}).items())) or "-",
            ", ".join(node.get("gpus") or []) or "-",
            ", ".join(sorted(placed.get(node["hostname"], []))) or "-",
        )
    return table
