"""A run actor's side of cooperative cancellation (extended spec §5): the control plane's
request, the worker's delivery on its claim, and the status and acknowledgement of activity
attempts the request stops. Decisions are ``decide_cancellation``'s; this module commits them."""

from __future__ import annotations

from typing import Any

from persistence.ids import iso

from . import decide_activity, decide_cancellation
from . import messages as m
from .emit import Emitter
from .errors import GuardError, ProtocolError
from .host import ActorParts

# Guard refusals an attempt's status answers as 200 "stop" rather than as an error: the
# worker then stops its callback (extended spec §5.6).
_STATUS_STOPS = ("stale_attempt", "run_cancelled", "run_terminated", "activity_cancelled")


class CancellationHandlers(ActorParts):
    async def _on_request_cancellation(self, msg: m.RequestCancellation) -> dict[str, Any]:
        s = self.state
        if not s.is_open:
            return {"rejected": "run_not_active"}
        duplicate = s.coop is not None
        if not duplicate:
            await self.commit(decide_cancellation.request(s, msg.request_id, msg.reason, msg.cleanup_seconds, self.host.clock.now(),
                                                         msg.parent))
        coop = s.coop
        assert coop is not None
        return {
            "duplicate": duplicate,
            "cancellation_request": {
                "request_id": coop["request_id"], "requested_at": coop["requested_at"],
                "cleanup_deadline_at": coop["cleanup_deadline_at"],
                "history_refresh_page_token": decide_cancellation.FIRST_PAGE,
            },
        }

    async def _on_deliver_cancellation(self, msg: m.ClaimOp) -> dict[str, Any]:
        now = self.host.clock.now()
        await self._guard_wt(msg.task_id, msg.owner, msg.attempt, now)
        delivery = decide_cancellation.parse_delivery(msg.body)
        em, reply = decide_cancellation.deliver(self.state, msg.task_id, delivery, now)
        await self.commit(em)
        return reply

    def _on_activity_status(self, msg: m.ActivityOp) -> dict[str, Any]:
        s = self.state
        task_id, attempt_id, owner = msg.task_id, msg.attempt_id, msg.owner
        stopped = decide_cancellation.stopped_status(s, task_id, attempt_id, owner)
        if stopped is not None:
            return stopped
        base: dict[str, Any] = {"task_id": task_id, "activity_attempt_id": attempt_id, "lease_owner": owner,
                                "heartbeat_recorded": False, "worker_session": None}
        try:
            act = decide_activity.guard(s, task_id, attempt_id, owner, "status")
        except GuardError as exc:
            if exc.reason not in _STATUS_STOPS:
                raise
            return {**base, "can_continue": False, "cancel_requested": exc.reason != "stale_attempt", "reason": exc.reason}
        if act is None:
            return {**base, "can_continue": False, "cancel_requested": False, "reason": "run_closed"}
        waiting = decide_cancellation.waiting_status(s, act)
        if waiting is not None:
            return waiting
        if (act.lease_expires_at or 0) <= self.host.clock.now():
            return {**base, "can_continue": False, "cancel_requested": False, "reason": "lease_expired"}
        return {
            **base, "can_continue": True, "cancel_requested": False, "reason": None,
            "lease_expires_at": iso(act.lease_expires_at),
            "deadlines": {k: iso(v) for k, v in decide_activity.deadlines(act).items() if k != "schedule_to_start"},
        }

    async def _on_acknowledge_cancellation(self, msg: m.ActivityOp) -> dict[str, Any]:
        s = self.state
        task_id, attempt_id, owner = msg.task_id, msg.attempt_id, msg.owner
        info = s.stopped_attempts.get(attempt_id)
        stopped = info is not None and info["task_id"] == task_id and info["owner"] == owner
        act = None if stopped else decide_activity.guard(s, task_id, attempt_id, owner, "acknowledge")  # 404/409 first
        coop = s.coop
        request_id = msg.body.get("request_id")
        if coop is None or request_id != coop["request_id"]:
            raise ProtocolError(409, "cancellation_request_mismatch",
                                "The request_id does not name the cancellation request this attempt was stopped for.")
        body = {"task_id": task_id, "activity_attempt_id": attempt_id, "lease_owner": owner, "request_id": request_id,
                "acknowledged": True, "reason": None, "heartbeat_recorded": False}
        if stopped:
            assert info is not None
            duplicate = bool(info.get("acked"))
            if not duplicate:
                em = Emitter(s, self.host.clock.now())
                em.internal("act_ack", attempt=attempt_id)
                await self.commit(em)
            return {**body, "duplicate": duplicate, "history_event_id": info["event_id"]}
        if act is None or act.cancel_request != coop["request_id"]:
            raise ProtocolError(409, "activity_not_cancelled",
                                "This activity attempt was not asked to stop; report its outcome with complete or fail.")
        em = Emitter(s, self.host.clock.now())
        event_id = decide_cancellation.stop_activity(em, act, coop["request_id"], acknowledged=True)
        await self.commit(em)
        return {**body, "duplicate": False, "history_event_id": event_id}
