"""The benchmark comparison's arithmetic (ops/bench_compare.py): interleaved rounds, medians,
ratios candidate/base — pure functions, checked without running a server."""

from __future__ import annotations

from typing import Any

from ops.bench_compare import compare, render


def test_rounds_interleave_and_each_figure_gets_medians_and_a_ratio() -> None:
    calls: list[str] = []
    figures = {"base": iter([10.0, 30.0, 20.0]), "cand": iter([5.0, 4.0, 6.0])}

    def run(build: str) -> dict[str, Any]:
        calls.append(build)
        return {"phases": {"w1": {"server_cpu_s": next(figures[build]), "label": "text is skipped"}}, "flag": True}

    result = compare(run, "base", "cand", 3)
    assert calls == ["base", "cand", "cand", "base", "base", "cand"], "the order alternates so drift hits both"
    assert result["figures"] == {"phases.w1.server_cpu_s": {"base": 20.0, "candidate": 5.0, "ratio": 0.25}}
    assert "phases.w1.server_cpu_s" in render(result) and "0.250" in render(result)


def test_a_figure_only_one_build_reports_is_left_out_and_a_zero_base_has_no_ratio() -> None:
    reports = {"a": {"x": 0.0, "only_a": 1.0}, "b": {"x": 2.0, "only_b": 3.0}}
    result = compare(lambda build: reports[build], "a", "b", 1)
    assert result["figures"] == {"x": {"base": 0.0, "candidate": 2.0, "ratio": None}}
