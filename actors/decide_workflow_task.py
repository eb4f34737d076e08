"""Decisions for workflow tasks: claim, ownership guard, completion and failure."""

from __future__ import annotations

import math
from typing import Any

from persistence import avro
from persistence.ids import iso, shard_of
from persistence.vocabulary import STOPPED_STATUSES, activity_execution_id

from . import decide_cancellation, local_activities, memo, message_streams, workflow_streams
from .closing import closure_effects, timer_payload
from .commands import STEP_COMMANDS, UPDATE_COMMANDS, CommandError, validate_commands
from .emit import AVRO_NULL_BLOB, Emitter, NewRun, blob_of, new_run_meta, par_fields
from .errors import GuardError
from .id_source import RANDOM_IDS, IdSource
from .limits import DEFAULT as DEFAULT_LIMITS
from .limits import Limits, check_completion, check_history
from .run_state import TERMINAL, RunState

WORKFLOW_TASK_LEASE = 60.0
STOP_REASONS = {
    "completed": "run_completed",
    "failed": "run_failed",
    "cancelled": "run_cancelled",
    "terminated": "run_terminated",
}


def run_closed_error(state: RunState) -> GuardError:
    return GuardError(
        409,
        "run_closed",
        f"Workflow run is {state.status}; the task can no longer be completed.",
        run_status=state.status,
        stop_reason=STOP_REASONS.get(state.status, "run_closed"),
        cancel_requested=state.status in STOPPED_STATUSES,
        can_continue=False,
        run_closed_reason=state.closed_reason,
        run_closed_at=iso(state.closed_at),
    )


def guard(state: RunState, task_id: str, owner: Any, attempt: Any, now: float) -> None:
    """Ownership guard shared by history, heartbeat, complete and fail (worker-plane 5.4)."""
    wt = state.wt
    if wt is None or wt.task_id != task_id:
        if not _known_task(state, task_id):
            raise GuardError(404, "task_not_found", f"Workflow task [{task_id}] was not found.", task_id=task_id)
        if state.status in TERMINAL:
            raise run_closed_error(state)
        raise GuardError(409, "task_not_leased", "Workflow task is not leased.", task_status="completed")
    if wt.status != "leased":
        raise GuardError(409, "task_not_leased", "Workflow task is not leased.", task_status=wt.status)
    if now >= (wt.lease_expires_at or 0):
        raise GuardError(
            409,
            "lease_expired",
            "The workflow task lease has expired.",
            release=True,
            lease_owner=wt.owner,
            lease_expires_at=iso(wt.lease_expires_at),
        )
    if owner != wt.owner:
        raise GuardError(409, "lease_owner_mismatch", "Workflow task is leased to another worker.", lease_owner=wt.owner)
    if attempt != wt.attempt:
        raise GuardError(
            409,
            "workflow_task_attempt_mismatch",
            f"Workflow task attempt {attempt} is stale; the current attempt is {wt.attempt}.",
            current_attempt=wt.attempt,
        )


def _known_task(state: RunState, task_id: str) -> bool:
    prefix = f"{state.run_id}-wt"
    if not task_id.startswith(prefix):
        return False
    try:
        n = int(task_id[len(prefix) :])
    except ValueError:
        return False
    return 1 <= n <= state.wt_counter


def claim(
    state: RunState, owner: str, now: float, lease: float = WORKFLOW_TASK_LEASE, poll_id: str | None = None
) -> Emitter | None:
    wt = state.wt
    if wt is None or wt.status != "ready" or wt.available_at > now or not state.is_open:
        return None
    em = Emitter(state, now)
    stamp: dict[str, Any] = {"poll": poll_id} if poll_id else {}
    if state.sticky is not None:
        worker, until = state.sticky
        stamp["sm"] = "sticky_hit_expected" if owner == worker and now < until else "forced_cold_replay"
    em.internal("wt_claim", task=wt.task_id, attempt=wt.attempt + 1, owner=owner, lease=now + lease, snap=state.next_h - 1, **stamp)
    return em


def sticky_fields(state: RunState, task_id: str, sticky: dict[str, Any] | None, now: float) -> dict[str, Any]:
    """The ``wt_done`` fields that set this run's sticky affinity (extended spec §12.2), or
    nothing (which clears it): only a completion whose ``sticky_cache`` names the lease owner
    and this run, from a worker registered with sticky execution (checked by the caller)."""
    wt = state.wt
    if sticky is None or wt is None or wt.task_id != task_id:
        return {}
    if sticky.get("worker_id") != wt.owner or sticky.get("run_id") != state.run_id:
        return {}
    if sticky.get("workflow_id") != state.meta.get("workflow_id"):
        return {}
    return {"sticky": wt.owner, "sticky_until": now + sticky["ttl"]}


def fail(state: RunState, task_id: str, failure: dict[str, Any], now: float) -> tuple[Emitter, str]:
    """A workflow-task failure never writes history; it retries the task with backoff."""
    em = Emitter(state, now)
    if failure.get("type") == "WorkflowTaskWaitingForHistory":
        kept = {"sticky_kept": True} if state.sticky is not None else {}  # a no-op: the affinity stands (§12.2)
        em.internal("wt_done", task=task_id, **kept)
        _defer_due_condition_timeout(state, em)
        return em, "completed"
    delay = min(2 ** state.wt_failures, 60)
    em.internal("wt_fail", task=task_id, retry_at=now + delay, message=str(failure.get("message"))[:2000], type=failure.get("type"))
    return em, "failed"


def _defer_due_condition_timeout(state: RunState, em: Emitter) -> None:
    """Nothing to do here: a deferred condition timeout fires on the actor's next tick."""


def complete(
    state: RunState, task_id: str, raw_commands: Any, now: float, limits: Limits = DEFAULT_LIMITS, ids: IdSource = RANDOM_IDS,
    sticky: dict[str, Any] | None = None, cursors: Any = None,
) -> Emitter:
    """``sticky``: the completion's ``sticky_cache`` with ``ttl`` (seconds) as the server allows it."""
    # A cooperative worker may complete with no command: it delivered the request, or its
    # prepared local calls already recorded the steps (extended spec §2.4, §5.4).
    commands = validate_commands(raw_commands, allow_empty=state.coop is not None or prepared_claim(state))
    consumed = message_streams.parse_cursors(cursors)
    em = Emitter(state, now, workflow_task_id=task_id, ids=ids)
    message_streams.advance(state, em, consumed)  # how far the workflow read its message streams (§7.1)
    wt = state.wt
    affinity = sticky_fields(state, task_id, sticky, now)
    if wt is not None and wt.update_id is not None:
        return _complete_update_task(state, em, task_id, wt.update_id, commands, affinity)
    if state.cond is not None and state.last_signal is not None and wt is not None and state.last_signal_h > wt.snapshot:
        # A signal reached the open wait after this task's snapshot. Replay binds it to that
        # wait, so these commands were decided on a history the SDK will never replay again:
        # applying them would make the next replay non-deterministic. Nothing is written; the
        # next task (scheduled by wt_done) replays with the signal in place.
        em.internal("wt_done", task=task_id, **affinity)
        return em
    step = state.step_seq
    satisfied: dict[str, Any] | None = None
    # A completion is proof the worker re-evaluated the open wait's predicate (spec 10.6).
    if state.cond is not None:
        satisfied = state.cond
        _satisfy_condition(state, em, satisfied)
    closes = False
    duplicates = _check_groups(state, commands)
    check_completion(state, [c for i, c in enumerate(commands) if i not in duplicates], limits)
    workflow_streams.annotate(state.wstreams, [c for i, c in enumerate(commands) if i not in duplicates], limits.stream_items)
    updated: set[str] = set()
    for i, cmd in enumerate(commands):
        ctype = cmd["type"]
        if ctype in UPDATE_COMMANDS:
            if cmd["update_id"] in updated:
                raise CommandError(409, "invalid_commands", f"Update [{cmd['update_id']}] is answered twice in one completion.")
            updated.add(cmd["update_id"])
            apply_update(state, em, cmd, None)
        elif ctype in STEP_COMMANDS:
            par = cmd.get("par")
            if i in duplicates:
                continue
            step += 1
            if par and par["parallel_group_base_sequence"] + par["parallel_group_index"] != step:
                raise CommandError(
                    409,
                    "invalid_commands",
                    f"Parallel group metadata places this command at step "
                    f"{par['parallel_group_base_sequence'] + par['parallel_group_index']}, but the server assigns {step}.",
                )
            _STEP_APPLY[ctype](state, em, cmd, step, satisfied)
        else:
            closes = True
            _TERMINAL_APPLY[ctype](state, em, cmd, step)
    if not closes:  # closing a run may always be recorded, whatever its length
        check_history(state, sum(1 for record in em.records if record.is_history), limits)
    if not closes:
        message_streams.release(state, em)  # the stream a new wait listens to gets its next held message
    em.internal("wt_done", task=task_id, **({} if closes else affinity))
    if closes:
        closure_effects(state, em)
    elif commands and state.coop is not None and state.coop["delivered"] is None and not state.coop["waiting"]:
        # The replay stopped short of the boundary to commit earlier commands first (the SDK
        # completes those and delivers on its next task): give it that next task.
        em.internal("repair_wake")
    return em


def prepared_claim(state: RunState) -> bool:
    """Whether the run has prepared local calls (their steps are recorded before the completion,
    which may then have nothing left to say)."""
    return bool(state.locals)


def _complete_update_task(
    state: RunState, em: Emitter, task_id: str, update_id: str, commands: list[dict[str, Any]], affinity: dict[str, Any]
) -> Emitter:
    """An update task answers exactly its update; the open wait (if any) is not re-evaluated by
    it, so it stays open and the applied update wakes an ordinary task (spec 8.2 step 6)."""
    if len(commands) != 1 or commands[0]["type"] not in UPDATE_COMMANDS or commands[0]["update_id"] != update_id:
        raise CommandError(
            409, "invalid_commands",
            f"This is an update task: complete it with exactly one complete_update or fail_update for update [{update_id}].",
        )
    apply_update(state, em, commands[0], state.cond["seq"] if state.cond is not None else None)
    em.internal("wt_done", task=task_id, **affinity)
    return em


def apply_update(state: RunState, em: Emitter, cmd: dict[str, Any], seq: int | None) -> None:
    up = state.updates.get(cmd["update_id"])
    if up is None or up["status"] != "accepted" or cmd["update_id"] not in state.pending_updates:
        raise CommandError(409, "invalid_commands", f"Update [{cmd['update_id']}] is not an accepted update of this run.")
    ids = {
        "workflow_command_id": up["command_id"],
        "workflow_instance_id": state.meta["workflow_id"],
        "workflow_run_id": state.run_id,
    }
    at = {"sequence": seq} if seq is not None else {}
    base = {"update_id": up["update_id"], "update_name": up["name"]}
    if cmd["type"] == "complete_update":
        em.event("UpdateApplied", {**base, "arguments": up["arguments"], **ids, **at}, command_id=up["command_id"])
        em.event("UpdateCompleted", {**base, **at, "result": blob_of(cmd["result"]), "payload_codec": "avro", **ids}, command_id=up["command_id"])
        return
    exc_type = cmd.get("exception_type")
    exc_class = cmd.get("exception_class") or exc_type or "UpdateFailed"
    em.event(
        "UpdateCompleted",
        {
            **base,
            "failure_id": f"{up['update_id']}-failure",
            "failure_category": "application",
            "non_retryable": cmd.get("non_retryable", True),
            "exception_type": exc_type,
            "exception_class": exc_class,
            "message": cmd["message"],
            "exception": {"class": exc_class, "type": exc_type, "message": cmd["message"]},
            **ids,
        },
        command_id=up["command_id"],
    )


def _satisfy_condition(state: RunState, em: Emitter, cond: dict[str, Any]) -> None:
    payload: dict[str, Any] = {"sequence": cond["seq"], "condition_wait_id": cond["wait_id"]}
    for key, src in (("condition_key", "key"), ("condition_definition_fingerprint", "fingerprint"), ("timeout_seconds", "timeout")):
        if cond.get(src) is not None:
            payload[key] = cond[src]
    timer = state.timers.get(cond["seq"])
    if timer is not None:
        payload["timer_id"] = timer.timer_id
    if state.last_signal:
        payload.update(state.last_signal)
    em.event("ConditionWaitSatisfied", payload)
    if timer is not None:
        em.event("TimerCancelled", timer_payload(timer, {"cancelled_at": em.ts()}))


def _check_groups(state: RunState, commands: list[dict[str, Any]]) -> set[int]:
    """Find re-emitted members of running groups; every new group must arrive complete (spec 10.7)."""
    duplicates: set[int] = set()
    groups: dict[str, dict[str, Any]] = {}
    for i, cmd in enumerate(commands):
        par = cmd.get("par")
        if not par:
            continue
        if _is_duplicate_member(state, cmd, par):
            duplicates.add(i)
            continue
        for entry in par["parallel_group_path"]:
            shape = {k: entry[k] for k in ("parallel_group_kind", "parallel_group_base_sequence", "parallel_group_size")}
            group = groups.setdefault(entry["parallel_group_id"], {"shape": shape, "indexes": set()})
            if group["shape"] != shape:
                raise CommandError(409, "invalid_commands", f"Parallel group {entry['parallel_group_id']} has inconsistent metadata.")
            group["indexes"].add(entry["parallel_group_index"])
    for group_id, group in groups.items():
        if group["indexes"] != set(range(group["shape"]["parallel_group_size"])):
            raise CommandError(
                409,
                "invalid_commands",
                f"Parallel group {group_id} declares {group['shape']['parallel_group_size']} members "
                f"but the completion carries indexes {sorted(group['indexes'])}.",
            )
    return duplicates


def _is_duplicate_member(state: RunState, cmd: dict[str, Any], par: dict[str, Any]) -> bool:
    seq = par["parallel_group_base_sequence"] + par["parallel_group_index"]
    if seq > state.step_seq:
        return False
    step = state.steps.get(seq)
    if step is None:
        return False
    kind = {
        "schedule_activity": "activity", "record_local_activity": "local_activity", "start_timer": "timer",
        "start_child_workflow": "child",
    }.get(cmd["type"])
    if step["kind"] != kind:
        return False
    if kind == "timer":
        return bool(step.get("delay") == cmd["delay_seconds"])
    name = cmd.get("activity_type") or cmd.get("workflow_type")
    return bool(step.get("name") == name)


def _schedule_activity(state: RunState, em: Emitter, cmd: dict[str, Any], seq: int, _s: Any) -> None:
    exec_id = activity_execution_id(state.run_id, seq)
    queue = cmd.get("queue") or state.task_queue
    payload = {
        "sequence": seq,
        "activity_type": cmd["activity_type"],
        "activity_execution_id": exec_id,
        "activity_class": cmd["activity_type"],
        "workflow_task_id": em.workflow_task_id,
        **par_fields(cmd.get("par")),
    }
    if "cancellation_policy" in cmd["policy"]:
        payload["cancellation_policy"] = cmd["policy"]["cancellation_policy"]
    extra = {"queue": queue, "arguments": cmd.get("arguments"), "policy": cmd["policy"], "par": cmd.get("par")}
    if cmd.get("session"):
        payload["worker_session"] = cmd["session"]
        extra["session"] = cmd["session"]  # its attempts go to the session's holder (extended §11.1)
    em.event("ActivityScheduled", payload, extra=extra)


def _start_timer(state: RunState, em: Emitter, cmd: dict[str, Any], seq: int, _s: Any) -> None:
    fire_at = em.now + cmd["delay_seconds"]
    payload = {
        "sequence": seq,
        "timer_id": f"{state.run_id}-t{seq}",
        "delay_seconds": cmd["delay_seconds"],
        "fire_at": iso(fire_at),
        **par_fields(cmd.get("par")),
    }
    em.event("TimerScheduled", payload, extra={"fire_at": fire_at, "par": cmd.get("par")})


def _start_child(state: RunState, em: Emitter, cmd: dict[str, Any], seq: int, _s: Any) -> None:
    child_wf = em.ids.ulid(em.now)
    count = state.meta.get("shard_count", 64)
    child_shard = shard_of(state.namespace, child_wf, count)
    child_run = em.ids.run_ulid(child_shard, em.now)
    policy = cmd["parent_close_policy"]
    par = par_fields(cmd.get("par"))
    base = {
        "sequence": seq,
        "child_workflow_type": cmd["workflow_type"],
        "child_workflow_instance_id": child_wf,
        "child_workflow_run_id": child_run,
        "child_workflow_class": cmd["workflow_type"],
        "child_call_id": f"{state.run_id}-c{seq}",
        "parent_close_policy": policy,
        **({"cancellation_policy": cmd["cancellation_policy"]} if cmd.get("cancellation_policy") else {}),
        **par,
    }
    if cmd.get("retry_policy") is not None:
        base["retry_policy"] = {"snapshot_version": 1, **cmd["retry_policy"]}
    timeouts = {k: cmd[k] for k in ("execution_timeout_seconds", "run_timeout_seconds") if cmd.get(k)}
    if timeouts:
        base["timeout_policy"] = {"snapshot_version": 1, "execution_timeout_seconds": None, "run_timeout_seconds": None, **timeouts}
    em.event("ChildWorkflowScheduled", dict(base), extra={"par": cmd.get("par")})
    meta = new_run_meta(
        run_id=child_run,
        namespace=state.namespace,
        workflow_id=child_wf,
        workflow_type=cmd["workflow_type"],
        task_queue=cmd.get("queue") or state.meta.get("task_queue"),
        run_number=1,
        arguments=cmd.get("arguments"),
        now=em.now,
        execution_timeout=cmd.get("execution_timeout_seconds"),
        run_timeout=cmd.get("run_timeout_seconds"),
        parent={
            "run_id": state.run_id,
            "workflow_id": state.meta["workflow_id"],
            "sequence": seq,
            "policy": policy,
        },
        shard=child_shard,
        shard_count=count,
    )
    if cmd.get("trace"):
        meta["trace"] = cmd["trace"]
    if state.meta.get("compatibility"):
        meta["compatibility"] = state.meta["compatibility"]  # a child runs on its parent's build (extended §10.1)
    started = dict(base, child_run_number=1)
    for key in ("execution_timeout_seconds", "run_timeout_seconds"):
        if cmd.get(key):
            started[key] = cmd[key]
    em.event("ChildRunStarted", started, extra={"start": meta})
    em.new_runs.append(NewRun(child_run, meta))


def _side_effect(state: RunState, em: Emitter, cmd: dict[str, Any], seq: int, _s: Any) -> None:
    payload = {"sequence": seq, "result": cmd["result"], "payload_codec": "avro"}
    if "workflow_stream" in cmd:  # the fold applies the operation unless the decision skipped it (extended §7.2)
        payload["workflow_stream"] = cmd["workflow_stream"]
        if cmd.get("stream_outcome"):
            payload["workflow_stream_outcome"] = cmd["stream_outcome"]
    em.event("SideEffectRecorded", payload)


def _version_marker(state: RunState, em: Emitter, cmd: dict[str, Any], seq: int, _s: Any) -> None:
    payload = {k: cmd[k] for k in ("change_id", "version", "min_supported", "max_supported")}
    em.event("VersionMarkerRecorded", {"sequence": seq, **payload})


def _upsert(state: RunState, em: Emitter, cmd: dict[str, Any], seq: int, _s: Any) -> None:
    merged = dict(state.search_attributes)
    for key, value in cmd["attributes"].items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    em.event("SearchAttributesUpserted", {"sequence": seq, "attributes": cmd["attributes"], "merged": merged})


def _upsert_memo(state: RunState, em: Emitter, cmd: dict[str, Any], seq: int, _s: Any) -> None:
    earlier = next((r.extra["memo"] for r in reversed(em.records) if r.kind == "MemoUpserted"), None)
    current = earlier if earlier is not None else (state.meta.get("memo") or {})
    merged = memo.merge(current, cmd["decoded"], "commands")
    payload = {"sequence": seq, "entries": cmd["entries"], "merged": {"codec": "avro", "blob": avro.encode(merged)}}
    em.event("MemoUpserted", payload, extra={"memo": merged})


def _open_condition(state: RunState, em: Emitter, cmd: dict[str, Any], seq: int, satisfied: dict[str, Any] | None) -> None:
    wait_id = f"{state.run_id}-w{seq}"
    payload: dict[str, Any] = {"sequence": seq, "condition_wait_id": wait_id}
    for key in ("condition_key", "condition_definition_fingerprint"):
        if key in cmd:
            payload[key] = cmd[key]
    timeout = cmd.get("timeout_seconds")
    if timeout is not None:
        payload["timeout_seconds"] = timeout
    deadline = None
    delay = timeout
    if timeout is not None:
        deadline = em.now + timeout
        # A reopened wait keeps the remaining time of the wait it continues (spec 10.6).
        if (
            satisfied is not None
            and satisfied.get("deadline") is not None
            and satisfied.get("key") == cmd.get("condition_key")
            and satisfied.get("fingerprint") == cmd.get("condition_definition_fingerprint")
            and satisfied.get("timeout") == timeout
        ):
            deadline = satisfied["deadline"]
            delay = max(0, math.ceil(deadline - em.now))
    em.event("ConditionWaitOpened", payload, extra={"deadline": deadline})
    if timeout is not None:
        extra = {"timer_kind": "condition_timeout", "condition_wait_id": wait_id}
        for key in ("condition_key", "condition_definition_fingerprint"):
            if key in cmd:
                extra[key] = cmd[key]
        em.event(
            "TimerScheduled",
            {"sequence": seq, "timer_id": f"{state.run_id}-t{seq}", "delay_seconds": delay, "fire_at": iso(deadline), **extra},
            extra={"fire_at": deadline, "extra": extra},
        )


def _complete_workflow(state: RunState, em: Emitter, cmd: dict[str, Any], step: int) -> None:
    result = cmd.get("result")
    output = blob_of(result) if result is not None else AVRO_NULL_BLOB
    env = result if isinstance(result, dict) else {"codec": "avro", "blob": output}
    em.event("WorkflowCompleted", {"output": output, "payload_codec": "avro"}, extra={"output": env})


def _fail_workflow(state: RunState, em: Emitter, cmd: dict[str, Any], step: int) -> None:
    if decide_cancellation.closes_cancelled(state, cmd):
        coop = state.coop
        assert coop is not None
        decide_cancellation.close_cancelled(state, em, coop["reason"], cmd["message"], effects=False)
        return
    exception = dict(cmd.get("exception") or {})
    exception.setdefault("class", cmd.get("exception_class") or "Exception")
    exception.setdefault("type", cmd.get("exception_type"))
    exception.setdefault("message", cmd["message"])
    exception.setdefault("code", 0)
    payload = {
        "failure_id": f"{state.run_id}-f",
        "source_kind": "workflow_run",
        "source_id": state.run_id,
        "failure_category": "application",
        "non_retryable": bool(cmd.get("non_retryable", False)),
        "exception_class": cmd.get("exception_class") or "Exception",
        "message": cmd["message"],
        "exception": exception,
    }
    for key in ("exception_type", "failed_step_sequence", "failed_activity_execution_id"):
        if cmd.get(key) is not None:
            payload[key] = cmd[key]
    em.event("WorkflowFailed", payload)


def _continue_as_new(state: RunState, em: Emitter, cmd: dict[str, Any], step: int) -> None:
    meta = state.meta
    count = meta.get("shard_count", 64)
    shard = meta.get("shard", shard_of(meta["namespace"], meta["workflow_id"], count))
    new_run = em.ids.run_ulid(shard, em.now)
    number = meta["run_number"] + 1
    arguments = cmd.get("arguments") or meta.get("arguments")
    new_meta = new_run_meta(
        run_id=new_run,
        namespace=meta["namespace"],
        workflow_id=meta["workflow_id"],
        workflow_type=cmd.get("workflow_type") or meta["workflow_type"],
        task_queue=cmd.get("queue") or meta.get("task_queue"),
        run_number=number,
        arguments=arguments,
        now=em.now,
        execution_timeout=meta.get("execution_timeout"),
        run_timeout=meta.get("run_timeout"),
        execution_deadline=meta.get("execution_deadline"),
        business_key=meta.get("business_key"),
        memo=meta.get("memo"),
        search_attributes=state.search_attributes,
        parent=meta.get("parent"),
        continued_from=state.run_id,
        shard=shard,
        shard_count=count,
    )
    if state.streams:
        new_meta["message_streams"] = message_streams.carry(state, em)
    trace = cmd.get("trace") or meta.get("trace")  # the continuation's own carrier, else the run's (§15.1)
    if trace:
        new_meta["trace"] = trace
    if meta.get("compatibility"):
        new_meta["compatibility"] = meta["compatibility"]
    em.event(
        "WorkflowContinuedAsNew",
        {
            "sequence": step + 1,
            "continued_to_run_id": new_run,
            "continued_to_run_number": number,
            "closed_reason": "continued",
        },
        extra={"continued_to": new_run, "start": new_meta},
    )
    em.new_runs.append(NewRun(new_run, new_meta))


_STEP_APPLY = {
    "schedule_activity": _schedule_activity,
    "record_local_activity": lambda state, em, cmd, seq, _s: local_activities.record(state.run_id, em, cmd, seq),
    "start_timer": _start_timer,
    "start_child_workflow": _start_child,
    "record_side_effect": _side_effect,
    "record_version_marker": _version_marker,
    "upsert_search_attributes": _upsert,
    "upsert_memo": _upsert_memo,
    "open_condition_wait": _open_condition,
}
_TERMINAL_APPLY = {
    "complete_workflow": _complete_workflow,
    "fail_workflow": _fail_workflow,
    "continue_as_new": _continue_as_new,
}
