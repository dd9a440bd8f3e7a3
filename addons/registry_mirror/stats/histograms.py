"""Prometheus histograms a fleet can add up across replicas and data centers (quantile gauges cannot be): bucket
counts, their sum and count, kept per label values. Pure: observations in, cumulative buckets out."""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field

# an upstream's answer (manifest, tag, HEAD, token): milliseconds on a LAN, seconds across a bad WAN
ANSWER_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# a blob's whole transfer from the upstream: a small layer in a fraction of a second, a large one in minutes
TRANSFER_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


@dataclass
class Histogram:
    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)  # per bucket, not cumulative; the last one is +Inf
    total: float = 0.0

    def __post_init__(self) -> None:
        self.counts = self.counts or [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def buckets(self) -> list[list]:
        """[le, cumulative count], +Inf last, as Prometheus exposes them (lists: the snapshot is JSON)."""
        out, running = [], 0
        for le, count in zip([*(f"{b:g}" for b in self.bounds), "+Inf"], self.counts, strict=True):
            running += count
            out.append([le, running])
        return out


class Histograms:
    """One histogram per label values, all with the same buckets."""

    def __init__(self, bounds: tuple[float, ...]):
        self.bounds = bounds
        self.by_labels: dict[tuple[str, ...], Histogram] = {}

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        self.by_labels.setdefault(labels, Histogram(self.bounds)).observe(value)

    def snapshot(self) -> list[dict]:
        return [{"labels": list(labels), "buckets": h.buckets(), "sum": h.total}
                for labels, h in sorted(self.by_labels.items())]
