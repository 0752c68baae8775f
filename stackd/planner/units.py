"""Sizes as a person reads them; no import, so that the CLI's tables do not load the config models."""

from __future__ import annotations

MIB_PER_GIB = 1024


def gib(mib: float, places: int | None = None) -> str:
    """MiB as a person reads it: ``13312 -> '13 GiB'``, ``32607 -> '31.8 GiB'``; ``places`` fixes
    the decimals (``places=1``: ``'13.0 GiB'``, for tables whose columns align)."""
    if places is not None:
        return f"{mib / MIB_PER_GIB:.{places}f} GiB"
    return f"{round(mib / MIB_PER_GIB, 1):g} GiB"
