"""Counting observations into fixed buckets, as plain data.

The layers below the runtime count what they do (commit latency, group sizes, poll waits)
without knowing about any metrics library; the runtime's Prometheus collector reads these at
scrape time. ``counts[i]`` holds the observations up to and including ``bounds[i]`` (not
cumulative); the last slot holds those above every bound.
"""

from __future__ import annotations


class Buckets:
    __slots__ = ("bounds", "counts", "total", "count")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.count += 1
        self.total += value
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[i] += 1
                return
        self.counts[-1] += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """(upper bound, observations at or below it) in Prometheus's ``le`` form, ``+Inf`` last."""
        out, running = [], 0
        for bound, n in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out


LATENCY_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
