"""Per-key metrics with a bounded ``key`` label: key names, at most ``MAX_KEY_LABELS`` of them.

Key names are chosen by an admin, not by callers, but a daemon with thousands of keys would
still make thousands of series: past the cap, the rest are summed under ``key="other"``.
Read at scrape time from the meter (``stackd.api.limits``): the hot path pays nothing.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from stackd.api.keyring import Keyring
from stackd.api.limits import KeyMeter

MAX_KEY_LABELS = 32
OTHER = "other"


def key_label(name: str, shown: frozenset[str]) -> str:
    return name if name in shown else OTHER


class KeyCollector(Collector):
    def __init__(self, keyring: Keyring, meter: KeyMeter) -> None:
        self._keyring = keyring
        self._meter = meter

    def collect(self) -> Iterator[Metric]:
        names = self._keyring.names()
        shown = frozenset(names[:MAX_KEY_LABELS])
        tokens = GaugeMetricFamily(
            "stackd_key_tokens_today", "Tokens a key used today (UTC).", labels=["key"]
        )
        cost = GaugeMetricFamily(
            "stackd_key_cost_usd_today", "Cloud cost of a key today (UTC).", labels=["key"]
        )
        sums: dict[str, tuple[int, float]] = {}
        for name in names:
            t, c = self._meter.today(name)
            label = key_label(name, shown)
            old_t, old_c = sums.get(label, (0, 0.0))
            sums[label] = (old_t + t, old_c + c)
        for label, (t, c) in sums.items():
            tokens.add_metric([label], t)
            cost.add_metric([label], c)
        refused = CounterMetricFamily(
            "stackd_key_refused", "Requests refused 429 by a key's limit.", labels=["key", "limit"]
        )
        counts: dict[tuple[str, str], int] = {}
        for (name, limit), n in dict(self._meter.refused).items():
            pair = (key_label(name, shown), limit)
            counts[pair] = counts.get(pair, 0) + n
        for (shown_name, limit), n in sorted(counts.items()):
            refused.add_metric([shown_name, limit], n)
        yield tokens
        yield cost
        yield refused
