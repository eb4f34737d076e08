"""Two builds measured back to back in one run, rounds interleaved (A, B, A, B, ...), so a change
is judged against its baseline under the same machine load; prints medians and B/A ratios.

On a shared 2-core machine the absolute figures drift by tens of percent between runs; the
ratio of interleaved rounds is what a change is judged by.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any


def _leaves(report: Any, prefix: str = "") -> dict[str, float]:
    """Every numeric figure of a report, by dotted path."""
    out: dict[str, float] = {}
    if isinstance(report, dict):
        for key, value in report.items():
            out.update(_leaves(value, f"{prefix}{key}."))
    elif isinstance(report, (int, float)) and not isinstance(report, bool):
        out[prefix.rstrip(".")] = float(report)
    return out


def compare(run: Callable[[str], dict[str, Any]], base: str, candidate: str, rounds: int) -> dict[str, Any]:
    """``run(build)`` once per build per round; the medians of each figure and candidate/base."""
    samples: dict[str, list[dict[str, float]]] = {base: [], candidate: []}
    for i in range(rounds):
        order = (base, candidate) if i % 2 == 0 else (candidate, base)
        for build in order:
            samples[build].append(_leaves(run(build)))
    table: dict[str, dict[str, float | None]] = {}
    for key in sorted(set().union(*samples[base], *samples[candidate])):
        a = [s[key] for s in samples[base] if key in s]
        b = [s[key] for s in samples[candidate] if key in s]
        if not a or not b:
            continue
        ma, mb = statistics.median(a), statistics.median(b)
        table[key] = {"base": round(ma, 3), "candidate": round(mb, 3), "ratio": round(mb / ma, 3) if ma else None}
    return {"base": base, "candidate": candidate, "rounds": rounds, "figures": table}


def render(result: dict[str, Any]) -> str:
    lines = [f"base {result['base']}  vs  candidate {result['candidate']}  ({result['rounds']} interleaved rounds, medians)",
             f"{'figure':60} {'base':>12} {'candidate':>12} {'ratio':>8}"]
    for key, row in result["figures"].items():
        ratio = "" if row["ratio"] is None else f"{row['ratio']:.3f}"
        lines.append(f"{key:60} {row['base']:>12g} {row['candidate']:>12g} {ratio:>8}")
    return "\n".join(lines)
