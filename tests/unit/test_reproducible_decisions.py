"""A decision is a pure function of its inputs: state, commands, time and the id source."""

from __future__ import annotations

import copy
from typing import Any

from actors import decide_workflow_task as dwt
from actors.id_source import SeededIds
from actors.records import Record
from persistence.ids import shard_of_run
from tests.unit.test_fold_and_decide import T0, Run

CHILD = {"type": "start_child_workflow", "workflow_type": "ship", "parent_close_policy": "terminate"}
CONTINUE = {"type": "continue_as_new"}


def _decide(commands: list[dict], seed: int) -> list[Any]:
    run = Run()
    run.claim(T0 + 1)
    wt = run.state.wt
    assert wt is not None
    em = dwt.complete(copy.deepcopy(run.state), wt.task_id, commands, T0 + 1, ids=SeededIds(seed))
    return em.records + [{"new_run": n.run_id, "meta": n.meta} for n in em.new_runs]


def test_a_child_start_decided_twice_with_the_same_seed_is_the_same_records() -> None:
    first, second = _decide([CHILD], 7), _decide([CHILD], 7)
    assert first == second
    child = next(r for r in first if isinstance(r, Record) and r.kind == "ChildRunStarted").payload
    assert child["child_workflow_run_id"] != child["child_workflow_instance_id"]
    # the minted run id still routes itself to the child's shard
    assert shard_of_run(child["child_workflow_run_id"]) == next(r for r in first if isinstance(r, dict) and "new_run" in r)["meta"]["shard"]


def test_another_seed_mints_other_ids() -> None:
    assert _decide([CHILD], 7) != _decide([CHILD], 8)


def test_continue_as_new_is_reproducible_too() -> None:
    first, second = _decide([CONTINUE], 3), _decide([CONTINUE], 3)
    assert first == second and any(isinstance(r, Record) and r.kind == "WorkflowContinuedAsNew" for r in first)


def test_the_default_source_is_random() -> None:
    run = Run()
    run.claim(T0 + 1)
    wt = run.state.wt
    assert wt is not None
    a = dwt.complete(copy.deepcopy(run.state), wt.task_id, [CHILD], T0 + 1)
    b = dwt.complete(copy.deepcopy(run.state), wt.task_id, [CHILD], T0 + 1)
    assert a.new_runs[0].run_id != b.new_runs[0].run_id
