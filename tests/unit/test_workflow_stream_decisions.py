"""Workflow streams as pure decisions (actors.workflow_streams): dedupe, backpressure, the run's
item bound, close-then-append within one completion, paging and terminal pages, retention."""

from __future__ import annotations

from typing import Any

from actors import workflow_streams as ws

ENV = {"codec": "avro", "blob": "x"}


def item(key: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"payload": ENV, "payload_codec": "avro"}
    if key is not None:
        out["idempotency_key"] = key
    return out


def test_an_append_dedupes_known_keys_and_repeats_within_one_request() -> None:
    streams: dict[str, dict[str, Any]] = {}
    ws.fold_append(streams, "s", [item("a"), item()], "client", None, 1.0)
    plan = ws.plan_append(streams, "s", [item("a"), item("b"), item("b"), item()], None, 100)
    assert (plan.outcome, plan.offsets, plan.deduped) == (None, [2, 3], 2)
    ws.fold_append(streams, "s", plan.fresh, "client", None, 2.0)
    assert [i["offset"] for i in streams["s"]["items"]] == [0, 1, 2, 3]
    assert streams["s"]["keys"] == {"a": 0, "b": 2}


def test_backpressure_counts_unread_items_and_the_run_bound_counts_every_stream() -> None:
    streams: dict[str, dict[str, Any]] = {}
    ws.fold_append(streams, "s", [item(), item()], "workflow", None, 1.0)
    assert ws.plan_append(streams, "s", [item()], 2, 100).outcome == "rejected_backpressure"
    ws.page(streams["s"], 0, 1, None)  # a subscriber read one
    assert ws.plan_append(streams, "s", [item()], 2, 100).outcome is None
    ws.fold_append(streams, "t", [item()], "workflow", None, 1.0)
    assert ws.plan_append(streams, "s", [item()], None, 3).outcome == "rejected_backpressure"
    assert ws.plan_append(streams, "s", [item()], None, 4).outcome is None
    assert ws.plan_append(streams, "s", [], 1, 1).outcome is None, "nothing new is never refused"


def test_one_completion_that_closes_then_appends_skips_the_append_without_touching_the_state() -> None:
    streams: dict[str, dict[str, Any]] = {}
    close = {"type": "record_side_effect", "workflow_stream": {"operation": "close", "stream_name": "s"}}
    append = {"type": "record_side_effect", "workflow_stream": {"operation": "append", "stream_name": "s", "items": [item()]}}
    again = {"type": "record_side_effect", "workflow_stream": {"operation": "error", "stream_name": "s", "error_reason": "r"}}
    ws.annotate(streams, [close, append, again], 100)
    assert "stream_outcome" not in close
    assert append["stream_outcome"] == again["stream_outcome"] == "rejected_closed"
    assert streams == {}, "deciding folds nothing"


def test_a_recorded_outcome_is_what_the_fold_obeys() -> None:
    streams: dict[str, dict[str, Any]] = {}
    directive = {"operation": "append", "stream_name": "s", "items": [item()]}
    ws.fold_directive(streams, {"workflow_stream": directive, "workflow_stream_outcome": "rejected_backpressure"}, 1.0)
    assert streams == {}
    ws.fold_directive(streams, {"workflow_stream": directive}, 1.0)
    assert len(streams["s"]["items"]) == 1 and streams["s"]["items"][0]["origin"] == "workflow"


def test_pages_are_terminal_only_past_the_last_item_of_a_closed_stream() -> None:
    streams: dict[str, dict[str, Any]] = {}
    ws.fold_append(streams, "s", [item(), item(), item()], "workflow", None, 1.0)
    ws.fold_close(streams, "s", None, 10, 2.0)
    assert ws.page(streams["s"], 0, 2, None)[1:] == (2, False)
    items, next_offset, terminal = ws.page(streams["s"], 2, 2, None)
    assert ([i["offset"] for i in items], next_offset, terminal) == ([2], 3, True)
    assert ws.page(streams["s"], 9, 2, None)[1:] == (9, True), "past the end: next_offset stays where it was asked"
    assert not ws.expired(streams["s"], None, 12.0) and ws.expired(streams["s"], None, 12.5)


def test_a_stream_its_closed_run_left_open_reads_closed_and_a_reload_counts_everything_read() -> None:
    streams: dict[str, dict[str, Any]] = {}
    ws.fold_append(streams, "s", [item(), item()], "workflow", None, 1.0)
    assert ws.describe("s", streams["s"], "wf", "run", None)["status"] == "open"
    described = ws.describe("s", streams["s"], "wf", "run", 5.0)
    assert (described["status"], described["pending_items"], described["last_offset"]) == ("closed", 2, 1)
    assert described["closed_at"] is not None
    assert ws.page(streams["s"], 2, 5, 5.0)[2] is True
    ws.mark_loaded(streams)
    assert ws.describe("s", streams["s"], "wf", "run", None)["pending_items"] == 0
