"""A run actor's answers to its workers: claiming, replaying, heartbeating, completing and
failing workflow tasks and activity attempts. Each handler runs inside the actor, one message
at a time, and commits before it answers."""

from __future__ import annotations

import logging
from typing import Any

from persistence.vocabulary import activity_execution_id, encode_offset

from . import decide_activity, decide_cancellation, decide_time, decide_workflow_task, heartbeats
from . import messages as m
from .emit import Emitter
from .errors import GuardError
from .host import ActorParts
from .run_state import note_heartbeat

log = logging.getLogger("dw.actor")


class WorkerPlaneHandlers(ActorParts):
    async def _on_claim_workflow_task(self, msg: m.ClaimWorkflowTask) -> dict[str, Any] | None:
        s = self.state
        if s.wt is None or s.wt.task_id != msg.task_id:
            return None
        em = decide_workflow_task.claim(s, msg.owner, self.host.clock.now(), self.host.wt_lease, msg.poll_id)
        if em is None:
            return None
        await self.commit(em)
        return self.workflow_task_payload(msg.page_size)

    def _on_replay_workflow_task(self, msg: m.ReplayWorkflowTask) -> dict[str, Any] | None:
        wt = self.state.wt
        now = self.host.clock.now()
        if wt is None or wt.task_id != msg.task_id or wt.status != "leased" or wt.owner != msg.owner or wt.attempt != msg.attempt:
            return None
        if (wt.lease_expires_at or 0) <= now:
            return None
        return self.workflow_task_payload(msg.page_size)

    def workflow_task_payload(self, page_size: int) -> dict[str, Any]:
        s = self.state
        wt = s.wt
        assert wt is not None
        from persistence.ids import iso

        events = s.events[: min(wt.snapshot, page_size)]
        more = wt.snapshot > page_size
        return {
            "task_id": wt.task_id,
            "task_kind": "workflow",
            "workflow_id": s.meta["workflow_id"],
            "run_id": s.run_id,
            "namespace": s.namespace,
            "workflow_type": s.meta["workflow_type"],
            "workflow_task_attempt": wt.attempt,
            "payload_codec": "avro",
            "arguments": s.meta.get("arguments"),
            "run_status": s.status,
            "task_queue": s.task_queue,
            "lease_owner": wt.owner,
            "lease_expires_at": iso(wt.lease_expires_at),
            "history_events": events,
            "last_history_sequence": wt.snapshot,
            "total_history_events": wt.snapshot,
            "next_history_page_token": encode_offset(len(events)) if more else None,
            "workflow_update_id": wt.update_id,
            "workflow_command_id": None,
            **({"sticky_replay_mode": wt.sticky_mode} if wt.sticky_mode else {}),
            **({"observability_context": s.meta["trace"]} if s.meta.get("trace") else {}),
            **self._observation(),
        }

    def _observation(self) -> dict[str, Any]:
        """A standing cooperative request rides on every task and heartbeat of the run (extended §5.3)."""
        observed = decide_cancellation.observation(self.state)
        return {"cancellation_request": observed} if observed is not None else {}

    async def _on_workflow_task_history(self, msg: m.WorkflowTaskHistory) -> dict[str, Any]:
        s = self.state
        now = self.host.clock.now()
        await self._guard_wt(msg.task_id, msg.owner, msg.attempt, now)
        wt = s.wt
        assert wt is not None
        end = min(wt.snapshot, msg.after + msg.page_size)
        events = s.events[msg.after:end]
        return {
            "task_id": msg.task_id,
            "workflow_task_attempt": wt.attempt,
            "history_events": events,
            "total_history_events": wt.snapshot,
            "next_history_page_token": encode_offset(end) if end < wt.snapshot else None,
        }

    async def _guard_wt(self, task_id: str, owner: Any, attempt: Any, now: float) -> None:
        try:
            decide_workflow_task.guard(self.state, task_id, owner, attempt, now)
        except GuardError as exc:
            if exc.release and self.state.wt is not None:
                em = Emitter(self.state, now)
                em.internal("wt_release", task=task_id, reason="lease_expired")
                await self.commit(em)
            raise

    async def _on_workflow_task_heartbeat(self, msg: m.WorkflowTaskHeartbeat) -> dict[str, Any]:
        s = self.state
        now = self.host.clock.now()
        task_id = msg.task_id
        await self._guard_wt(task_id, msg.owner, msg.attempt, now)
        em = Emitter(s, now)
        wt = s.wt
        assert wt is not None
        snapshot = wt.snapshot
        if s.coop is not None and s.coop["h"] > snapshot:
            snapshot = s.next_h - 1  # the claim horizon moves so the worker's refresh shows the request (§5.3)
        em.internal("wt_claim", task=task_id, attempt=wt.attempt, owner=wt.owner, lease=now + self.host.wt_lease, snap=snapshot)
        await self.commit(em)
        from persistence.ids import iso

        return {
            "task_id": task_id,
            "workflow_task_attempt": wt.attempt,
            "lease_owner": wt.owner,
            "renewed": True,
            "lease_expires_at": iso(wt.lease_expires_at),
            "run_status": s.status,
            "task_status": "leased",
            "reason": None,
            **self._observation(),
        }

    async def _on_complete_workflow_task(self, msg: m.CompleteWorkflowTask) -> dict[str, Any]:
        s = self.state
        now = self.host.clock.now()
        task_id, attempt = msg.task_id, msg.attempt
        await self._guard_wt(task_id, msg.owner, attempt, now)
        em = decide_workflow_task.complete(s, task_id, msg.commands, now, self.host.limits, self.host.ids, msg.sticky, msg.cursors)
        await self.commit(em)
        created = [r.run_id for r in em.new_runs]
        if s.wt is not None:
            created.append(s.wt.task_id)
        created += [
            activity_execution_id(self.run_id, record.payload["sequence"])
            for record in em.records
            if record.kind == "ActivityScheduled" and not record.extra.get("local")  # a local step has no task
        ]
        return {
            "task_id": task_id,
            "workflow_task_attempt": attempt,
            "outcome": "completed",
            "recorded": True,
            "run_id": self.run_id,
            "run_status": s.status,
            "created_task_ids": created,
            "reason": None,
        }

    async def _on_fail_workflow_task(self, msg: m.FailWorkflowTask) -> dict[str, Any]:
        s = self.state
        now = self.host.clock.now()
        task_id, attempt, failure = msg.task_id, msg.attempt, msg.failure
        await self._guard_wt(task_id, msg.owner, attempt, now)
        em, outcome = decide_workflow_task.fail(s, task_id, failure, now)
        await self.commit(em)
        if outcome == "failed":
            log.warning("run %s: workflow task %s failed (%s): %s", self.run_id, task_id, failure.get("type"), failure.get("message"))
        return {
            "task_id": task_id,
            "workflow_task_attempt": attempt,
            "outcome": outcome,
            "recorded": True,
            "reason": None,
            "next_task_id": s.wt.task_id if s.wt is not None else None,
        }

    async def _on_release_owner(self, msg: m.ReleaseOwner) -> tuple[int, int]:
        """A deregistering worker hands back every lease it holds here at once: its workflow
        task and its activity attempts (an attempt's late outcome is then stale)."""
        s = self.state
        em = Emitter(s, self.host.clock.now())
        wt = s.wt
        if wt is not None and wt.status == "leased" and wt.owner == msg.owner:
            em.internal("wt_release", task=wt.task_id, reason="worker_deregistered")
        for act in sorted(s.activities.values(), key=lambda a: a.seq):
            if act.status == "running" and not act.attempt_closed and act.owner == msg.owner:
                em.internal("act_release", seq=act.seq)
        await self.commit(em)
        released = [r.kind for r in em.records]
        return released.count("wt_release"), released.count("act_release")

    async def _on_claim_activity(self, msg: m.ClaimActivity) -> dict[str, Any] | None:
        em = decide_activity.claim(self.state, msg.seq, msg.owner, self.host.clock.now(), self.host.act_lease, msg.poll_id)
        if em is None:
            return None
        await self.commit(em)
        return decide_activity.task_payload(self.state, self.state.activities[msg.seq])

    def _on_replay_activity(self, msg: m.ReplayActivity) -> dict[str, Any] | None:
        seq = decide_activity._seq_of(self.state, msg.task_id)
        act = self.state.activities.get(seq) if seq is not None else None
        if act is None or act.status != "running" or act.owner != msg.owner or act.attempt_number != msg.attempt:
            return None
        if (act.lease_expires_at or 0) <= self.host.clock.now():
            return None
        return decide_activity.task_payload(self.state, act)

    async def _on_complete_activity(self, msg: m.CompleteActivity) -> dict[str, Any]:
        s = self.state
        task_id, attempt_id, result = msg.task_id, msg.attempt_id, msg.result
        act = decide_activity.guard(s, task_id, attempt_id, msg.owner, "completed")
        body = {"task_id": task_id, "activity_attempt_id": attempt_id, "outcome": "completed", "recorded": True, "reason": None}
        if act is None:
            await self._record_late(task_id, "completed", result)
            return {**body, "next_task_id": None}
        await self.commit(decide_activity.complete(s, act, result, self.host.clock.now()))
        return {**body, "next_task_id": s.wt.task_id if s.wt is not None else None}

    async def _on_fail_activity(self, msg: m.FailActivity) -> dict[str, Any]:
        s = self.state
        task_id, attempt_id, failure = msg.task_id, msg.attempt_id, msg.failure
        act = decide_activity.guard(s, task_id, attempt_id, msg.owner, "failed")
        body = {"task_id": task_id, "activity_attempt_id": attempt_id, "outcome": "failed", "recorded": True, "reason": None}
        if act is None:
            await self._record_late(task_id, "failed", failure)
            return {**body, "next_task_id": None}
        await self.commit(decide_activity.fail(s, act, failure, self.host.clock.now()))
        retry = s.activities.get(act.seq)
        next_task = retry.task_id if retry is not None else (s.wt.task_id if s.wt is not None else None)
        return {**body, "next_task_id": next_task}

    async def _record_late(self, task_id: str, outcome: str, value: Any) -> None:
        em = Emitter(self.state, self.host.clock.now())
        em.internal("act_late", seq=decide_activity._seq_of(self.state, task_id), outcome=outcome, value=value)
        await self.commit(em)

    async def _on_activity_heartbeat(self, msg: m.ActivityHeartbeat) -> dict[str, Any]:
        from persistence.ids import iso

        s = self.state
        task_id, attempt_id, owner, progress = msg.task_id, msg.attempt_id, msg.owner, msg.progress
        body: dict[str, Any] = {
            "task_id": task_id,
            "activity_attempt_id": attempt_id,
            "lease_owner": owner,
            "run_closed_reason": None,
            "run_closed_at": None,
        }
        act, stop = decide_activity.may_continue(s, task_id, attempt_id, owner, "heartbeat")
        if act is None:
            return {**body, "cancel_requested": stop in decide_activity.CANCELLED, "can_continue": False, "reason": stop,
                    "heartbeat_recorded": False, "run_closed_reason": s.closed_reason, "run_closed_at": iso(s.closed_at)}
        now = self.host.clock.now()
        lease = now + max(self.host.act_lease, float(act.policy.get("start_to_close_timeout") or 0))
        progress = heartbeats.normalize(progress)
        if heartbeats.due(act.heartbeat_journaled, now):  # durable, at most once per interval (actors.heartbeats)
            em = Emitter(s, now)
            em.internal("act_hb", seq=act.seq, exec=act.exec_id, n=act.attempt_number, progress=progress, lease=lease)
            await self.commit(em)
        else:  # between two journaled ones the newest stays in memory only
            note_heartbeat(s, act.exec_id, act.attempt_number, now, progress)
            act.progress = progress
            act.lease_expires_at = lease
        act.heartbeat_base = now
        self.host.timers.schedule(self.run_id, decide_time.next_deadline(s, now))
        return {
            **body,
            "cancel_requested": False,
            "can_continue": True,
            "reason": None,
            "heartbeat_recorded": True,
            "lease_expires_at": iso(act.lease_expires_at),
            "last_heartbeat_at": iso(now),
        }

    async def _on_renew_lease(self, msg: m.ActivityOp) -> dict[str, Any]:
        """Keep a live attempt's claim (extended §11.3): the lease moves to now + the activity
        lease, never earlier than granted and never for an attempt whose lease already ran out;
        no heartbeat is recorded and no business deadline moves. The renewal is journaled only
        when the journal's copy of the lease would otherwise run out before the next one."""
        from persistence.ids import iso

        s = self.state
        task_id, attempt_id, owner = msg.task_id, msg.attempt_id, msg.owner
        refused: dict[str, Any] = {"lease_renewed": False, "can_continue": False, "heartbeat_recorded": False,
                                   "workflow_task_id": task_id, "activity_attempt_id": attempt_id, "lease_owner": owner}
        act, stop = decide_activity.may_continue(s, task_id, attempt_id, owner, "renew")
        if act is None:
            raise GuardError(409, str(stop), f"The attempt cannot continue ({stop}); its claim is not renewed.",
                             **{**refused, "cancel_requested": stop in decide_activity.CANCELLED})
        now = self.host.clock.now()
        if (act.lease_expires_at or 0.0) <= now:
            raise GuardError(409, "lease_expired", "The attempt's lease ran out; an expired lease is never revived.",
                             **{**refused, "cancel_requested": False})
        lease = max(act.lease_expires_at or 0.0, now + self.host.act_lease)
        if (act.lease_journaled or 0.0) - now < self.host.act_lease / 2:
            em = Emitter(s, now)
            em.internal("act_lease", seq=act.seq, n=act.attempt_number, lease=lease)
            await self.commit(em)
        else:
            act.lease_expires_at = lease
        hb = act.policy.get("heartbeat_timeout")
        beat = (s.heartbeats.get(act.exec_id) or {}).get("attempts", {}).get(act.attempt_number)
        return {
            "lease_renewed": True, "can_continue": True, "cancel_requested": False, "heartbeat_recorded": False, "reason": None,
            "workflow_task_id": task_id, "workflow_instance_id": s.meta["workflow_id"], "workflow_run_id": s.run_id,
            "activity_execution_id": act.exec_id, "activity_attempt_id": attempt_id, "attempt_number": act.attempt_number,
            "lease_owner": owner, "server_time": iso(now), "lease_expires_at": iso(act.lease_expires_at),
            "last_heartbeat_at": iso(beat["last_heartbeat_at"]) if beat else None,
            "heartbeat_deadline_at": iso((act.heartbeat_base or now) + hb) if hb else None,
        }
