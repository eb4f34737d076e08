"""Schedules (control-plane §6): one actor-like record per schedule, fired by a node ticker.

A schedule lives on the shard of ``schedule:<id>`` in its namespace; only the owner of that
shard fires it or changes it (requests elsewhere are forwarded). Every change is one fenced
journal commit holding both the audit event (``records`` under ``schedule:<ns>:<id>``, the
``/history`` stream, kept after deletion) and the schedule's whole state as a projection row
(``ObjectRow`` kind ``schedule``), so a restart or a shard move resumes from exactly what was
acknowledged. Fire times come from ``actors.schedule_spec``; the state is a
``runtime.schedule_state.ScheduleState``, replaced (never edited) by each change.

Exactly once per occurrence: the workflow id of a fire is derived from the schedule and the
occurrence, so if the node dies between starting the run and recording the fire, the retry
finds the run already started and records it instead of starting a second one.
Catch-up: after downtime, a schedule whose fire time passed fires once (for the latest missed
occurrence, with ``missed_occurrences`` in the event) and then continues from now — like the
reference's ticker; older missed occurrences can be backfilled explicitly.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import trio

from actors import messages as m
from actors.records import history_event, to_stored
from actors.run_actor import NotOwner, RunNotFound
from actors.schedule_spec import SpecError, next_fire, occurrences, parse_spec, previous_fire
from persistence import codec
from persistence.ids import iso, shard_of, ulid
from persistence.journal import Batch, FencedError, ObjectRow, StoreUnavailable
from persistence.vocabulary import OPEN_STATUSES

from .engine import Engine
from .errors import ForwardTo, ProtocolError
from .schedule_state import ScheduleState
from .workflows import WorkflowService

log = logging.getLogger("dw.schedules")

KIND = "schedule"
OVERLAP_POLICIES = ("skip", "buffer_one", "buffer_all", "cancel_other", "terminate_other", "allow_all")


def fire_workflow_id(namespace: str, schedule_id: str, occurrence: float, k: int = 0) -> str:
    """A ULID fixed by (schedule, occurrence, k): its time part is the occurrence."""
    digest = hashlib.blake2b(f"{namespace}\x1f{schedule_id}\x1f{occurrence!r}\x1f{k}".encode(), digest_size=10).digest()
    return ulid(max(occurrence, 0.0), entropy=digest)


class ScheduleService:
    def __init__(self, engine: Engine, workflows: WorkflowService, *, max_memo_bytes: int, rng: Callable[[], float] = random.random) -> None:
        self.engine = engine
        self.workflows = workflows
        self.max_memo_bytes = max_memo_bytes
        self.rng = rng
        self.active: dict[tuple[str, str], ScheduleState] = {}  # schedules this node fires
        self._locks: dict[tuple[str, str], trio.Lock] = {}
        self._poke = trio.Event()

    # --- placement -------------------------------------------------------------------

    def shard(self, namespace: str, schedule_id: str) -> int:
        return shard_of(namespace, f"schedule:{schedule_id}", self.engine.shard_count)

    def _local(self, namespace: str, schedule_id: str) -> dict[int, int]:
        """The fence for writing this schedule; forwards the request when another node owns it."""
        owned = self.engine.owned
        if owned is None:
            return {}
        shard = self.shard(namespace, schedule_id)
        if shard not in owned:
            raise ForwardTo(shard)
        return {shard: owned[shard]}

    async def adopt(self, shards: set[int] | None = None) -> None:
        for row in await self.engine.journal.list_objects(KIND):
            schedule = ScheduleState.from_record(row.body)
            if schedule.status == "deleted":
                continue
            if shards is None or self.shard(row.namespace, row.name) in shards:
                self.active[(row.namespace, row.name)] = schedule
        self._poke.set()

    async def _adopt_owned(self) -> bool:
        """Load the schedules of what this node owns (everything on the embedded node; a cluster
        node also adopts shard by shard as it claims them); False if the journal is away."""
        try:
            await self.adopt(None if self.engine.owned is None else set(self.engine.owned))
        except Exception as exc:  # noqa: BLE001 - retried by the loop
            log.warning("schedules: loading them failed (%s); retrying", exc)
            return False
        return True

    def drop_namespace(self, namespace: str) -> None:
        for key in [k for k in self.active if k[0] == namespace]:
            del self.active[key]

    def drop(self, shards: set[int]) -> None:
        for key in list(self.active):
            if self.shard(*key) in shards:
                del self.active[key]

    # --- the ticker -------------------------------------------------------------------

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        adopted = await self._adopt_owned()
        task_status.started()
        while True:
            if not adopted:
                await trio.sleep(1.0)
                adopted = await self._adopt_owned()
                continue
            now = self.engine.clock.now()
            for key, schedule in list(self.active.items()):
                if schedule.status == "active" and (schedule.is_due(now) or schedule.buffered_actions):
                    try:
                        await self._tick(key)
                    except (ForwardTo, NotOwner):
                        self.active.pop(key, None)  # the shard moved away meanwhile
                    except StoreUnavailable as exc:
                        log.warning("schedule %s/%s: tick postponed, the journal is away (%s)", *key, exc)
                    except Exception:  # noqa: BLE001 - one broken schedule must not stop the others
                        log.exception("schedule %s/%s: tick failed; retried shortly", *key)
            active = [schedule for schedule in self.active.values() if schedule.status == "active"]
            wake = [schedule.next_fire_at for schedule in active if schedule.next_fire_at is not None]
            delay = min(wake) - self.engine.clock.now() if wake else 60.0
            if any(schedule.buffered_actions for schedule in self.active.values()):
                delay = min(delay, 1.0)  # buffered actions start as soon as nothing runs
            self._poke = trio.Event()
            with trio.move_on_after(max(min(delay, 60.0), 0.05)):
                await self._poke.wait()

    async def _tick(self, key: tuple[str, str]) -> None:
        namespace, schedule_id = key
        async with self._lock(key):
            current = self.active.get(key)
            if current is None or current.status != "active":
                return
            schedule = current
            now = self.engine.clock.now()
            events: list[tuple[str, dict[str, Any]]] = []
            occurrence = schedule.next_occurrence
            if schedule.is_due(now) and occurrence is not None:
                spec = parse_spec(schedule.spec)
                latest = max(previous_fire(spec, now) or occurrence, occurrence)
                missed = len(occurrences(spec, occurrence, latest))  # those skipped over (capped)
                schedule, outcome = await self._fire(schedule, latest, schedule.overlap_policy, events, now, missed=missed)
                log.info("schedule %s/%s fired for %s: %s", namespace, schedule_id, iso(latest), outcome.get("outcome"))
                schedule = self._plan_next(schedule, max(now, latest))
            elif schedule.buffered_actions and not await self._running(schedule):
                schedule = replace(schedule, buffered_actions=schedule.buffered_actions[1:])
                schedule, _ = await self._start(schedule, now, now, events, {"buffered": True})
            if events or schedule != current:  # a buffered fire has no audit event but must be kept
                await self._commit(schedule, events)

    def _plan_next(self, schedule: ScheduleState, after: float) -> ScheduleState:
        if schedule.status != "active":
            return replace(schedule, next_fire_at=None, next_occurrence=None)
        occurrence = next_fire(parse_spec(schedule.spec), after)
        jitter = schedule.jitter_seconds or 0
        fire_at = None if occurrence is None else occurrence + (self.rng() * jitter if jitter else 0.0)
        return replace(schedule, next_occurrence=occurrence, next_fire_at=fire_at)

    # --- firing -----------------------------------------------------------------------

    async def _running(self, schedule: ScheduleState) -> str | None:
        """The run id of the schedule's latest workflow while it is still open."""
        workflow_id = schedule.latest_workflow_instance_id
        if not workflow_id:
            return None
        inst = await self.engine.journal.get_instance(schedule.namespace, workflow_id)
        if inst is None:
            return None
        if self.engine.is_live(inst.current_run_id):
            try:
                run = await self.engine.ask(inst.current_run_id, m.Describe())
                return inst.current_run_id if run.is_open else None
            except RunNotFound:
                pass
        row = await self.engine.journal.get_run(inst.current_run_id)
        return inst.current_run_id if row is not None and row.status in OPEN_STATUSES else None

    async def _fire(
        self, schedule: ScheduleState, occurrence: float, policy: str, events: list[tuple[str, dict[str, Any]]], now: float,
        *, missed: int = 0, backfill: bool = False,
    ) -> tuple[ScheduleState, dict[str, Any]]:
        """Fire for ``occurrence`` under ``policy``: the changed state and the trigger outcome."""
        base = {"occurrence_time": iso(occurrence), "overlap_policy": policy, "missed_occurrences": missed} if not backfill else {
            "occurrence_time": iso(occurrence), "overlap_policy": policy, "backfill": True}
        if schedule.status != "active":
            return self._skip(schedule, events, now, "status_not_triggerable", base)
        if schedule.remaining_actions == 0:
            return self._skip(schedule, events, now, "remaining_actions_exhausted", base)
        running = await self._running(schedule)
        if running is not None:
            if policy == "skip":
                return self._skip(schedule, events, now, "overlap_policy_skip", base)
            if policy in ("buffer_one", "buffer_all") and not backfill:
                if policy == "buffer_one" and schedule.buffered_actions:
                    return schedule, {"outcome": "buffer_full", "reason": "Previous workflow is still running and buffer is at capacity."}
                buffered = (*schedule.buffered_actions, {"buffered_at": iso(now), "occurrence_time": iso(occurrence)})
                return replace(schedule, buffered_actions=buffered), {"outcome": "buffered", "buffer_depth": len(buffered)}
            if policy in ("cancel_other", "terminate_other"):
                kind = "cancel" if policy == "cancel_other" else "terminate"
                self.engine.post(running, m.Close(kind=kind, reason=f"schedule {schedule.schedule_id} overlap policy {policy}"))
        return await self._start(schedule, occurrence, now, events, base)

    @staticmethod
    def _skip(
        schedule: ScheduleState, events: list[tuple[str, dict[str, Any]]], now: float, reason: str, base: dict[str, Any]
    ) -> tuple[ScheduleState, dict[str, Any]]:
        events.append(("ScheduleTriggerSkipped", {**base, "reason": reason}))
        skipped = replace(
            schedule, skipped_trigger_count=schedule.skipped_trigger_count + 1, last_skip_reason=reason, last_skipped_at=iso(now)
        )
        return skipped, {"outcome": "skipped", "reason": reason}

    def _fire_id(self, schedule: ScheduleState, occurrence: float) -> str:
        """The fire's workflow id; in a cluster, the first of the series on a shard this node owns,
        so the start needs no other node to be up."""
        namespace, owned = schedule.namespace, self.engine.owned
        attempt = 0
        workflow_id = fire_workflow_id(namespace, schedule.schedule_id, occurrence, attempt)
        while owned is not None and shard_of(namespace, workflow_id, self.engine.shard_count) not in owned and attempt < 10_000:
            attempt += 1
            workflow_id = fire_workflow_id(namespace, schedule.schedule_id, occurrence, attempt)
        return workflow_id

    async def _start(
        self, schedule: ScheduleState, occurrence: float, now: float, events: list[tuple[str, dict[str, Any]]], base: dict[str, Any]
    ) -> tuple[ScheduleState, dict[str, Any]]:
        namespace, action = schedule.namespace, schedule.action
        workflow_id = self._fire_id(schedule, occurrence)
        body = {
            "workflow_id": workflow_id,
            "workflow_type": action["workflow_type"],
            "task_queue": action.get("task_queue"),
            "input": action.get("input"),
            "execution_timeout_seconds": action.get("execution_timeout_seconds"),
            "run_timeout_seconds": action.get("run_timeout_seconds"),
            "memo": schedule.memo or None,
            "search_attributes": schedule.search_attributes or None,
            "duplicate_policy": "use-existing",
            "schedule": {  # the run's own start event says which schedule and occurrence started it
                "schedule_id": schedule.schedule_id, "schedule_occurrence_time": iso(occurrence),
                "schedule_trigger_number": schedule.fires_count + 1, "schedule_overlap_policy": base.get("overlap_policy"),
                "schedule_cron_expression": next(iter(schedule.spec.get("cron_expressions") or []), None),
                "schedule_timezone": schedule.spec.get("timezone"),
                **({"schedule_backfill": True} if base.get("backfill") else {}),
            },
        }
        # Still this schedule's owner? A node that lost the shard must not start a run it then
        # cannot record: the new owner would fire the occurrence again. (An empty fenced batch
        # checks the epoch; a take-over in the instant after this check is still possible.)
        await self._append_fenced(schedule, Batch())
        try:
            started = await self.workflows.start(namespace, body)  # a duplicate is our own earlier fire
        except Exception as exc:  # noqa: BLE001 - a failed start is recorded, the schedule goes on
            reason = str(exc)[:500]
            events.append(("ScheduleTriggerSkipped", {**base, "reason": "start_failed", "error": reason}))
            failed = replace(
                schedule, failures_count=schedule.failures_count + 1,
                recent_actions=self._recent(schedule, {"outcome": "failed", "reason": reason, "fired_at": iso(now)}),
            )
            return failed, {"outcome": "trigger_failed", "reason": reason}
        remaining = None if schedule.remaining_actions is None else schedule.remaining_actions - 1
        fired = replace(
            schedule, fires_count=schedule.fires_count + 1, last_fired_at=iso(now), latest_workflow_instance_id=workflow_id,
            remaining_actions=remaining,
            recent_actions=self._recent(
                schedule, {"workflow_id": workflow_id, "run_id": started.run.run_id, "outcome": "triggered", "fired_at": iso(now)}
            ),
        )
        events.append((
            "ScheduleTriggered",
            {**base, "workflow_instance_id": workflow_id, "workflow_run_id": started.run.run_id, "trigger_number": fired.fires_count,
             "outcome": "scheduled", "workflow_type": action["workflow_type"]},
        ))
        if remaining == 0:
            fired = replace(fired, status="deleted", deleted_at=iso(now), next_fire_at=None, next_occurrence=None)
            events.append(("ScheduleDeleted", {"reason": "max_runs_exhausted"}))
        return fired, {"outcome": "triggered", "workflow_id": workflow_id, "run_id": started.run.run_id}

    @staticmethod
    def _recent(schedule: ScheduleState, item: dict[str, Any]) -> tuple[dict[str, Any], ...]:
        return (*schedule.recent_actions, item)[-10:]

    # --- persistence ------------------------------------------------------------------

    def _lock(self, key: tuple[str, str]) -> trio.Lock:
        return self._locks.setdefault(key, trio.Lock())

    async def _append_fenced(self, schedule: ScheduleState, batch: Batch) -> None:
        """Append under the epoch of the schedule's shard; taken over meanwhile, the new owner
        serves the schedule (``ForwardTo``)."""
        batch.fence = self._local(schedule.namespace, schedule.schedule_id)
        if not batch.fence and not (batch.records or batch.objects):
            return  # the embedded single node owns everything: nothing to check
        try:
            await self.engine.journal.append(batch)
        except FencedError as exc:
            self.engine.drop_shards({exc.shard})
            raise ForwardTo(exc.shard) from None

    async def _commit(self, schedule: ScheduleState, events: list[tuple[str, dict[str, Any]]]) -> ScheduleState:
        """One fenced commit: the audit events and the new state. Installed only once durable."""
        namespace, schedule_id = schedule.namespace, schedule.schedule_id
        now = self.engine.clock.now()
        stream = f"schedule:{namespace}:{schedule_id}"
        sequence = schedule.event_seq
        records = []
        for kind, payload in events:
            sequence += 1
            records.append((stream, sequence, codec.dumps(to_stored(history_event(kind, sequence, now, payload)))))
        schedule = replace(schedule, updated_at=iso(now), event_seq=sequence)
        await self._append_fenced(
            schedule, Batch(records=records, objects=[ObjectRow(namespace, KIND, schedule_id, schedule.to_record(), now)])
        )
        key = (namespace, schedule_id)
        if schedule.status == "deleted":
            self.active.pop(key, None)
        else:
            self.active[key] = schedule
        self._poke.set()
        return schedule

    async def states(self, namespace: str) -> list[ScheduleState]:
        """Every schedule of the namespace as the journal holds it (deleted ones included)."""
        return [ScheduleState.from_record(r.body) for r in await self.engine.journal.list_objects(KIND, namespace)]

    async def load(self, namespace: str, schedule_id: str, *, include_deleted: bool = False) -> ScheduleState:
        self._local(namespace, schedule_id)
        schedule = self.active.get((namespace, schedule_id))
        if schedule is None:
            rows = [r for r in await self.engine.journal.list_objects(KIND, namespace) if r.name == schedule_id]
            schedule = ScheduleState.from_record(rows[0].body) if rows else None
        if schedule is None or (schedule.status == "deleted" and not include_deleted):
            raise ProtocolError(
                404, "schedule_not_found", f"Schedule [{schedule_id}] not found in namespace [{namespace}].", schedule_id=schedule_id
            )
        return schedule

    # --- validation -------------------------------------------------------------------

    def validate_spec(self, raw: Any, schedule_id: str | None) -> dict[str, Any]:
        try:
            parse_spec(raw)
        except SpecError as exc:
            errors = {exc.field: [exc.message]}
            raise ProtocolError(422, exc.reason, exc.message, schedule_id=schedule_id, errors=errors, validation_errors=errors) from None
        return dict(raw)
