"""A run actor's side of prepared local activities (extended spec §2.2–2.5): each claim-bound
operation is guarded as the claim's other calls are, decided by ``prepared_local`` and
committed before its receipt is answered."""

from __future__ import annotations

from typing import Any

from . import messages as m
from . import prepared_local as pl
from .decide_cancellation import advance_horizon
from .emit import Emitter
from .errors import ProtocolError
from .host import ActorParts
from .limits import check_history
from .run_state import LocalStep

OPS = frozenset({"local_prepare", "local_control", "local_heartbeat", "local_outcome", "local_acknowledge",
                 "local_recover", "local_checkpoint", "local_checkpoint_group"})


class PreparedLocalHandlers(ActorParts):
    async def _on_prepared_local(self, msg: m.ClaimOp) -> dict[str, Any]:
        s, op, body = self.state, msg.op, msg.body
        now = self.host.clock.now()
        if op == "local_outcome":
            repeated = self._repeated_outcome(msg)
            if repeated is not None:
                return repeated  # a retried report after the claim was released by the first
        await self._guard_wt(msg.task_id, msg.owner, msg.attempt, now)
        lease = self.host.wt_lease
        if op == "local_prepare":
            d = pl.descriptor(body.get("descriptor"), s)
            check_history(s, 2, self.host.limits)
            em, receipt = pl.prepare(s, body, d, now, lease)
            await self.commit(em)
            return receipt or pl.admission_receipt(s, s.locals[body["sequence"]], now)
        if op == "local_recover":
            d = pl.descriptor(body.get("descriptor"), s)
            em, receipt = pl.recover(s, body["sequence"], d, now, lease)
            await self.commit(em)
            return receipt
        if op in ("local_checkpoint", "local_checkpoint_group"):
            em, receipt = pl.checkpoint(s, body, now, lease, self.host.limits, group=op == "local_checkpoint_group")
            await self.commit(em)
            return receipt
        step = pl.attempt_of(s, str(body["activity_attempt_id"]))
        if op == "local_acknowledge":
            em, receipt = pl.acknowledge(s, step, body.get("request_id"), now, lease)
            await self.commit(em)
            return receipt
        if op == "local_outcome":
            if step.status != "running":
                raise ProtocolError(409, "stale_attempt", "This local activity attempt has already resolved.", outcome="ignored")
            report = pl.parse_report(body.get("report"))
            em = Emitter(s, now, workflow_task_id=msg.task_id)
            receipt = pl.resolve(s, em, step, report, now, lease, pl.outcome_receipt(s, step))
            await self.commit(em)
            return receipt
        return await self._control(step, op == "local_heartbeat", body, now)

    async def _control(self, step: LocalStep, beat: bool, body: dict[str, Any], now: float) -> dict[str, Any]:
        """Renew the claim while the callback runs; a heartbeat also records progress. An attempt
        that must stop is told why (a cooperative stop, or a deadline the server then enforces)."""
        s = self.state
        reason = pl.stop_reason(s, step, now)
        em = Emitter(s, now, workflow_task_id=step.claim[0] if step.claim else None)
        if reason is not None:
            receipt = pl.control_receipt(s, step, now, reason)
            if reason.endswith("_deadline_expired") and reason != "cancellation_deadline_expired":
                pl.expire(s, em, step, now)  # the sweeper's work, done now that the worker asked
                await self.commit(em)
            return receipt
        event_id = None
        if beat:
            check_history(s, 1, self.host.limits)
            event_id = pl.heartbeat(s, em, step, body.get("progress"), now)
        advance_horizon(s, em, now + self.host.wt_lease)
        await self.commit(em)
        return pl.control_receipt(s, step, now, None, heartbeat_event=event_id, renewed=not beat)

    def _repeated_outcome(self, msg: m.ClaimOp) -> dict[str, Any] | None:
        attempt_id = msg.body.get("activity_attempt_id")
        for step in self.state.locals.values():
            receipt = step.receipt
            if step.attempt_id() == attempt_id and receipt is not None and "recorded" in receipt and (
                receipt.get("workflow_task_id"), receipt.get("workflow_task_attempt"), receipt.get("lease_owner")
            ) == (msg.task_id, msg.attempt, msg.owner):
                return {**receipt, "duplicate": True}
        return None

