"""The operator passes at their routes: 207 when part of a pass failed, 200 otherwise
(control-plane §9.1 ``POST /api/system/repair/pass``, §9.2 ``POST /api/system/activity-timeouts/pass``).

``SystemOps`` reports failures per run (tests/unit/test_system_ops.py); what the operator sees
is the route's status, so these drive a real node in-process (``node_app``: SQLite journal,
Quart test client) and break one run the way production breaks it: its journal refuses the
write, or its actor has failed and is quarantined when the pass reaches it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from actors import messages as m
from runtime.node import Node
from runtime.repair_loop import RepairLoop
from tests.unit.inprocess import CP, node_app
from tests.unit.test_system_ops import _schedule_activity, _stuck


@pytest.fixture(autouse=True)
def _no_background_repair(monkeypatch: pytest.MonkeyPatch) -> None:
    """The node's own repair pass (every 5 s) would race the route's: a run it repairs (or whose
    failed repair reloads it from the journal) is no longer a candidate when the route's pass runs."""

    async def idle(self: RepairLoop) -> None:
        return None

    monkeypatch.setattr(RepairLoop, "pass_once", idle)


async def _start(http: Any, workflow_id: str) -> str:
    r = await http.post("/api/workflows", json={"workflow_type": "order", "workflow_id": workflow_id, "task_queue": "q"},
                        headers=CP)
    assert r.status_code == 201, await r.get_data()
    return str((await r.get_json())["run_id"])


def _refuse_appends_for(node: Node, run_id: str) -> Callable[[], None]:
    """The journal refuses every write touching ``run_id`` (as a full disk would); returns the undo."""
    original: Callable[[Any], Awaitable[None]] = node.journal.append

    async def append(batch: Any) -> None:
        if any(rid == run_id for rid, _, _ in batch.records):
            raise RuntimeError("disk full")
        await original(batch)

    node.journal.append = append  # type: ignore[method-assign]
    return lambda: setattr(node.journal, "append", original)


async def _post(http: Any, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    r = await http.post(path, json=body, headers=CP)
    return r.status_code, await r.get_json()


async def test_a_repair_pass_with_a_failed_run_answers_207_listing_it_and_200_once_nothing_fails(tmp_path: Path) -> None:
    async with node_app(tmp_path) as (node, http):
        good, bad = await _start(http, "repair-good"), await _start(http, "repair-bad")
        await _stuck(node.engine, good)  # running, its workflow task lost: a missing-task candidate
        await _stuck(node.engine, bad)
        undo = _refuse_appends_for(node, bad)

        status, out = await _post(http, "/api/system/repair/pass", {})
        assert status == 207, out
        assert [f["run_id"] for f in out["missing_run_failures"]] == [bad], out
        assert "disk full" in out["missing_run_failures"][0]["error"]
        assert out["selected_missing_task_candidates"] == 2 and out["repaired_missing_tasks"] == 1, out
        assert out["existing_task_failures"] == []

        # the journal writes again and the bad run is stuck again: the same pass repairs it, 200
        undo()
        await _stuck(node.engine, bad)
        status, out = await _post(http, "/api/system/repair/pass", {"run_ids": [bad]})
        assert status == 200, out
        assert out["repaired_missing_tasks"] == 1 and out["missing_run_failures"] == [], out
        assert out["existing_task_failures"] == [] and out["run_ids"] == [bad]
        [view] = [v for v in node.engine.work_views() if v.run_id == bad]
        assert view.workflow_task is not None and view.workflow_task.status == "ready"


class _ShiftedClock:
    """The node's wall clock moved ``offset`` seconds ahead: deadlines are due at once, while the
    timer service (asleep until the real deadline) has not enforced them yet."""

    def __init__(self, node: Node, offset: float) -> None:
        self.node, self.offset, self.real = node, offset, node.clock.now

    def __enter__(self) -> None:
        self.node.clock.now = lambda: self.real() + self.offset  # type: ignore[method-assign]

    def __exit__(self, *exc: object) -> None:
        self.node.clock.now = self.real  # type: ignore[method-assign]


async def _expired(http: Any) -> list[str]:
    r = await http.get("/api/system/activity-timeouts", headers=CP)
    assert r.status_code == 200, await r.get_data()
    return list((await r.get_json())["expired_execution_ids"])


async def test_an_activity_timeout_pass_answers_200_and_207_once_a_run_is_unavailable(tmp_path: Path) -> None:
    async with node_app(tmp_path) as (node, http):
        first, good, bad = [await _start(http, f"timeout-{name}") for name in ("first", "good", "bad")]
        for run_id in (first, good, bad):
            await _schedule_activity(node.engine, run_id, start_to_close_timeout=30)  # claimed by a worker
        with _ShiftedClock(node, 45):
            expired = await _expired(http)
            owner = {v.activities[0].execution_id: v.run_id for v in node.engine.work_views() if v.activities}
            assert sorted(owner[e] for e in expired) == sorted((first, good, bad)), (expired, owner)
            execution = {run_id: e for e, run_id in owner.items()}

            # nothing fails: 200
            status, out = await _post(http, "/api/system/activity-timeouts/pass", {"execution_ids": [execution[first]]})
            assert status == 200, out
            assert (out["processed"], out["enforced"], out["failed"]) == (1, 1, 0), out

            # the bad run's actor fails (and is quarantined) just as the pass reaches it: 207,
            # the other run enforced, the bad one listed as an error
            ask = node.engine.ask

            async def failing_ask(run_id: str, message: m.Message) -> Any:
                if run_id == bad and isinstance(message, m.Tick):
                    actor = node.engine.actors[bad]
                    actor.stop()
                    node.engine.forget(actor)
                    node.engine.quarantine(bad)
                return await ask(run_id, message)

            node.engine.ask = failing_ask  # type: ignore[method-assign]
            try:
                status, out = await _post(http, "/api/system/activity-timeouts/pass", {})
            finally:
                node.engine.ask = ask  # type: ignore[method-assign]
            assert status == 207, out
            assert (out["processed"], out["enforced"], out["failed"]) == (2, 1, 1), out
            assert {"execution_id": execution[bad], "outcome": "error", "reason": "RunUnavailable"} in out["results"], out
            assert any(r["execution_id"] == execution[good] and r["outcome"] == "enforced" for r in out["results"]), out


async def test_an_activity_timeout_pass_reports_a_run_whose_journal_refuses_the_write(tmp_path: Path) -> None:
    async with node_app(tmp_path) as (node, http):
        good, bad = [await _start(http, f"refused-{name}") for name in ("good", "bad")]
        for run_id in (good, bad):
            await _schedule_activity(node.engine, run_id, start_to_close_timeout=30)
        with _ShiftedClock(node, 45):
            _refuse_appends_for(node, bad)
            status, out = await _post(http, "/api/system/activity-timeouts/pass", {})
        assert status == 207, out
        assert (out["processed"], out["enforced"], out["failed"]) == (2, 1, 1), out
        assert [r["outcome"] for r in out["results"] if r["outcome"] == "error"] == ["error"], out
