"""Schedules (control-plane §6): one actor-like record per schedule, fired by a node ticker.

A schedule lives on the shard of ``schedule:<id>`` in its namespace; only the owner of that
shard fires it or changes it (requests elsewhere are forwarded). Every change is one fenced
journal commit holding both the audit event (``records`` under ``schedule:<ns>:<id>``, the
``/history`` stream, kept after deletion) and the schedule's whole state as a projection row
(``ObjectRow`` kind ``schedule``), so a restart or a shard move resumes from exactly what was
acknowledged. Fire times come from ``actors.schedule_spec``.

Exactly once per occurrence: the workflow id of a fire is derived from the schedule and the
occurrence, so if the node dies between starting the run and recording the fire, the retry
finds the run already started and records it instead of starting a second one.
Catch-up: after downtime, a schedule whose fire time passed fires once (for the latest missed
occurrence, with ``missed_occurrences`` in the event) and then continues from now — like the
reference's ticker; older missed occurrences can be backfilled explicitly.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import random
from collections.abc import Callable
from typing import Any

import trio

from actors.run_actor import Msg, NotOwner
from actors.schedule_spec import SpecError, next_fire, occurrences, parse_spec, previous_fire
from persistence import codec
from persistence.ids import iso, shard_of
from persistence.journal import Batch, FencedError, ObjectRow, StoreUnavailable

from .engine import Engine
from .errors import ForwardTo, ProtocolError
from .workflows import BUCKETS, WorkflowService

log = logging.getLogger("dw.schedules")

KIND = "schedule"
OVERLAP_POLICIES = ("skip", "buffer_one", "buffer_all", "cancel_other", "terminate_other", "allow_all")
OPEN_STATUSES = {s for s, bucket in BUCKETS.items() if bucket == "running"}
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def fire_workflow_id(namespace: str, schedule_id: str, occurrence: float, k: int = 0) -> str:
    """A ULID-shaped id fixed by (schedule, occurrence, k): its time part is the occurrence."""
    ms = max(int(occurrence * 1000), 0)
    head = "".join(_CROCKFORD[(ms >> (5 * i)) & 31] for i in reversed(range(10)))
    digest = int.from_bytes(hashlib.blake2b(f"{namespace}\x1f{schedule_id}\x1f{occurrence!r}\x1f{k}".encode(), digest_size=10).digest(), "big")
    tail = "".join(_CROCKFORD[(digest >> (5 * i)) & 31] for i in reversed(range(16)))
    return head + tail


class ScheduleService:
    def __init__(self, engine: Engine, workflows: WorkflowService, *, max_memo_bytes: int, rng: Callable[[], float] = random.random) -> None:
        self.engine = engine
        self.workflows = workflows
        self.max_memo_bytes = max_memo_bytes
        self.rng = rng
        self.active: dict[tuple[str, str], dict[str, Any]] = {}  # schedules this node fires
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
            st = row.body
            if st.get("status") == "deleted":
                continue
            if shards is None or self.shard(row.namespace, row.name) in shards:
                self.active[(row.namespace, row.name)] = st
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
            for key, st in list(self.active.items()):
                if st.get("status") == "active" and (
                    (st.get("next_fire_at") is not None and st["next_fire_at"] <= now) or (st.get("buffered_actions") and not st.get("_busy"))
                ):
                    try:
                        await self._tick(key)
                    except (ForwardTo, NotOwner):
                        self.active.pop(key, None)  # the shard moved away meanwhile
                    except StoreUnavailable as exc:
                        log.warning("schedule %s/%s: tick postponed, the journal is away (%s)", *key, exc)
                    except Exception:  # noqa: BLE001 - one broken schedule must not stop the others
                        log.exception("schedule %s/%s: tick failed; retried shortly", *key)
            wake = [st["next_fire_at"] for st in self.active.values() if st.get("status") == "active" and st.get("next_fire_at") is not None]
            delay = min(wake) - self.engine.clock.now() if wake else 60.0
            if any(st.get("buffered_actions") for st in self.active.values()):
                delay = min(delay, 1.0)  # buffered actions start as soon as nothing runs
            self._poke = trio.Event()
            with trio.move_on_after(max(min(delay, 60.0), 0.05)):
                await self._poke.wait()

    async def _tick(self, key: tuple[str, str]) -> None:
        namespace, schedule_id = key
        async with self._lock(key):
            current = self.active.get(key)
            if current is None or current.get("status") != "active":
                return
            st = copy.deepcopy(current)
            now = self.engine.clock.now()
            events: list[tuple[str, dict[str, Any]]] = []
            occurrence = st.get("next_occurrence")
            if st.get("next_fire_at") is not None and st["next_fire_at"] <= now and occurrence is not None:
                spec = parse_spec(st["spec"])
                latest = max(previous_fire(spec, now) or occurrence, occurrence)
                missed = len(occurrences(spec, occurrence, latest))  # those skipped over (capped)
                outcome = await self._fire(st, latest, st["overlap_policy"], events, now, missed=missed)
                log.info("schedule %s/%s fired for %s: %s", namespace, schedule_id, iso(latest), outcome.get("outcome"))
                self._plan_next(st, max(now, latest))
            elif st.get("buffered_actions") and not await self._running(st):
                st["buffered_actions"].pop(0)
                await self._start(st, now, now, events, {"buffered": True})
            if events or st != current:  # a buffered fire has no audit event but must be kept
                await self._commit(st, events)

    def _plan_next(self, st: dict[str, Any], after: float) -> None:
        if st.get("status") != "active":
            st["next_fire_at"] = st["next_occurrence"] = None
            return
        nxt = next_fire(parse_spec(st["spec"]), after)
        st["next_occurrence"] = nxt
        jitter = st.get("jitter_seconds") or 0
        st["next_fire_at"] = None if nxt is None else nxt + (self.rng() * jitter if jitter else 0.0)

    # --- firing -----------------------------------------------------------------------

    async def _running(self, st: dict[str, Any]) -> str | None:
        """The run id of the schedule's latest workflow while it is still open."""
        wid = st.get("latest_workflow_instance_id")
        if not wid:
            return None
        inst = await self.engine.journal.get_instance(st["namespace"], wid)
        if inst is None:
            return None
        actor = self.engine.actors.get(inst.current_run_id)
        if actor is not None and actor.state.status != "new":
            return inst.current_run_id if actor.state.is_open else None
        row = await self.engine.journal.get_run(inst.current_run_id)
        return inst.current_run_id if row is not None and row.status in OPEN_STATUSES else None

    async def _fire(
        self, st: dict[str, Any], occurrence: float, policy: str, events: list[tuple[str, dict[str, Any]]], now: float,
        *, missed: int = 0, backfill: bool = False,
    ) -> dict[str, Any]:
        base = {"occurrence_time": iso(occurrence), "overlap_policy": policy, "missed_occurrences": missed} if not backfill else {
            "occurrence_time": iso(occurrence), "overlap_policy": policy, "backfill": True}
        if st["status"] != "active":
            return self._skip(st, events, now, "status_not_triggerable", base)
        if st.get("remaining_actions") == 0:
            return self._skip(st, events, now, "remaining_actions_exhausted", base)
        running = await self._running(st)
        if running is not None:
            if policy == "skip":
                return self._skip(st, events, now, "overlap_policy_skip", base)
            if policy in ("buffer_one", "buffer_all") and not backfill:
                buffered = st.setdefault("buffered_actions", [])
                if policy == "buffer_one" and buffered:
                    return {"outcome": "buffer_full", "reason": "Previous workflow is still running and buffer is at capacity."}
                buffered.append({"buffered_at": iso(now), "occurrence_time": iso(occurrence)})
                return {"outcome": "buffered", "buffer_depth": len(buffered)}
            if policy in ("cancel_other", "terminate_other"):
                kind = "cancel" if policy == "cancel_other" else "terminate"
                self.engine.post(running, Msg("close", {"kind": kind, "reason": f"schedule {st['schedule_id']} overlap policy {policy}"}))
        return await self._start(st, occurrence, now, events, base)

    def _skip(self, st: dict[str, Any], events: list[tuple[str, dict[str, Any]]], now: float, reason: str, base: dict[str, Any]) -> dict[str, Any]:
        st["skipped_trigger_count"] = st.get("skipped_trigger_count", 0) + 1
        st["last_skip_reason"] = reason
        st["last_skipped_at"] = iso(now)
        events.append(("ScheduleTriggerSkipped", {**base, "reason": reason}))
        return {"outcome": "skipped", "reason": reason}

    async def _start(
        self, st: dict[str, Any], occurrence: float, now: float, events: list[tuple[str, dict[str, Any]]], base: dict[str, Any]
    ) -> dict[str, Any]:
        namespace, action = st["namespace"], st["action"]
        owned = self.engine.owned
        k = 0
        wid = fire_workflow_id(namespace, st["schedule_id"], occurrence, k)
        while owned is not None and shard_of(namespace, wid, self.engine.shard_count) not in owned and k < 10_000:
            k += 1  # keep the run on this node: its start needs no other node to be up
            wid = fire_workflow_id(namespace, st["schedule_id"], occurrence, k)
        body = {
            "workflow_id": wid,
            "workflow_type": action["workflow_type"],
            "task_queue": action.get("task_queue"),
            "input": action.get("input"),
            "execution_timeout_seconds": action.get("execution_timeout_seconds"),
            "run_timeout_seconds": action.get("run_timeout_seconds"),
            "memo": st.get("memo") or None,
            "search_attributes": st.get("search_attributes") or None,
            "duplicate_policy": "use-existing",
        }
        try:
            status, started = await self.workflows.start(namespace, body)
        except Exception as exc:  # noqa: BLE001 - a failed start is recorded, the schedule goes on
            st["failures_count"] = st.get("failures_count", 0) + 1
            self._recent(st, {"outcome": "failed", "reason": str(exc)[:500], "fired_at": iso(now)})
            events.append(("ScheduleTriggerSkipped", {**base, "reason": "start_failed", "error": str(exc)[:500]}))
            return {"outcome": "trigger_failed", "reason": str(exc)[:500]}
        if status >= 400 and started.get("outcome") != "rejected_duplicate":  # a duplicate is our own earlier fire
            st["failures_count"] = st.get("failures_count", 0) + 1
            events.append(("ScheduleTriggerSkipped", {**base, "reason": "start_rejected", "error": started.get("message")}))
            return {"outcome": "trigger_failed", "reason": started.get("message") or "start rejected"}
        st["fires_count"] = st.get("fires_count", 0) + 1
        st["last_fired_at"] = iso(now)
        st["latest_workflow_instance_id"] = wid
        if st.get("remaining_actions") is not None:
            st["remaining_actions"] -= 1
        self._recent(st, {"workflow_id": wid, "run_id": started["run_id"], "outcome": "triggered", "fired_at": iso(now)})
        events.append((
            "ScheduleTriggered",
            {**base, "workflow_instance_id": wid, "workflow_run_id": started["run_id"], "trigger_number": st["fires_count"],
             "outcome": "scheduled", "workflow_type": action["workflow_type"]},
        ))
        if st.get("remaining_actions") == 0:
            st["status"] = "deleted"
            st["deleted_at"] = iso(now)
            st["next_fire_at"] = st["next_occurrence"] = None
            events.append(("ScheduleDeleted", {"reason": "max_runs_exhausted"}))
        return {"outcome": "triggered", "workflow_id": wid, "run_id": started["run_id"]}

    @staticmethod
    def _recent(st: dict[str, Any], item: dict[str, Any]) -> None:
        st["recent_actions"] = [*st.get("recent_actions", []), item][-10:]

    # --- persistence ------------------------------------------------------------------

    def _lock(self, key: tuple[str, str]) -> trio.Lock:
        return self._locks.setdefault(key, trio.Lock())

    async def _commit(self, st: dict[str, Any], events: list[tuple[str, dict[str, Any]]]) -> None:
        """One fenced commit: the audit events and the new state. Installed only once durable."""
        namespace, schedule_id = st["namespace"], st["schedule_id"]
        fence = self._local(namespace, schedule_id)
        now = self.engine.clock.now()
        st["updated_at"] = iso(now)
        records = []
        for etype, payload in events:
            st["event_seq"] = st.get("event_seq", 0) + 1
            rec = {"t": etype, "h": st["event_seq"], "at": now, "p": payload}
            records.append((f"schedule:{namespace}:{schedule_id}", st["event_seq"], codec.dumps(rec)))
        try:
            await self.engine.journal.append(
                Batch(fence=fence, records=records, objects=[ObjectRow(namespace, KIND, schedule_id, st, now)])
            )
        except FencedError as exc:  # taken over meanwhile: the new owner serves this schedule
            self.engine.drop_shards({exc.shard})
            raise ForwardTo(exc.shard) from None
        key = (namespace, schedule_id)
        if st["status"] == "deleted":
            self.active.pop(key, None)
        else:
            self.active[key] = st
        self._poke.set()

    async def load(self, namespace: str, schedule_id: str, *, include_deleted: bool = False) -> dict[str, Any]:
        self._local(namespace, schedule_id)
        st = self.active.get((namespace, schedule_id))
        if st is None:
            rows = [r for r in await self.engine.journal.list_objects(KIND, namespace) if r.name == schedule_id]
            st = rows[0].body if rows else None
        if st is None or (st.get("status") == "deleted" and not include_deleted):
            raise ProtocolError(
                404, "schedule_not_found", f"Schedule [{schedule_id}] not found in namespace [{namespace}].", schedule_id=schedule_id
            )
        return st

    # --- validation -------------------------------------------------------------------

    def validate_spec(self, raw: Any, schedule_id: str | None) -> dict[str, Any]:
        try:
            parse_spec(raw)
        except SpecError as exc:
            errors = {exc.field: [exc.message]}
            raise ProtocolError(422, exc.reason, exc.message, schedule_id=schedule_id, errors=errors, validation_errors=errors) from None
        return dict(raw)
