"""Heartbeat progress is bounded before it is kept (extended spec §14), and journaled at most
once per attempt per interval so a chatty activity does not grow the journal without bound."""

from __future__ import annotations

from actors import heartbeats


def test_progress_is_trimmed_bounded_and_oversized_details_are_replaced_by_their_size() -> None:
    out = heartbeats.normalize({"message": "  " + "m" * 400 + " ", "current": 3, "total": float("inf"), "unit": "u" * 99,
                                "details": {"page": 7}})
    assert out == {"message": "m" * 280, "current": 3, "unit": "u" * 64, "details": {"page": 7}}
    assert heartbeats.normalize({"unit": "pages", "current": -1, "total": True}) == {}, "a unit needs a number"
    big = heartbeats.normalize({"details": {"blob": "x" * 70_000}})
    assert big["details"]["_truncated"] is True and big["details"]["size_bytes"] > 64 * 1024


def test_a_heartbeat_is_journaled_first_then_at_most_once_per_interval() -> None:
    assert heartbeats.due(None, 100.0)
    assert not heartbeats.due(100.0, 100.0 + heartbeats.JOURNAL_INTERVAL - 0.1)
    assert heartbeats.due(100.0, 100.0 + heartbeats.JOURNAL_INTERVAL)
