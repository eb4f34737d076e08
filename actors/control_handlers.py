"""A run actor's answers to the control plane and to other runs: signals, cancel and terminate,
updates, children closing, and the start of the run itself."""

from __future__ import annotations

import logging
from typing import Any

from persistence.journal import ConflictError

from . import decide_control, message_streams, redrive, standalone, views
from . import messages as m
from .emit import Emitter, started_records
from .errors import ProtocolError
from .host import ActorParts
from .limits import history_full, signals_full
from .run_state import TERMINAL

log = logging.getLogger("dw.actor")


class ControlHandlers(ActorParts):
    async def _on_signal(self, msg: m.Signal) -> dict[str, Any]:
        s = self.state
        request_id = msg.request_id
        if request_id and request_id in s.commands:
            return s.commands[request_id]  # a client retry: the first answer, not a second event
        refusal = self._input_refusal()
        if refusal is not None:
            return refusal
        em = decide_control.signal(s, msg.name, msg.arguments, msg.command_id, self.host.clock.now())
        return await self._commit_command(em, request_id, msg.command_id)

    async def _on_close(self, msg: m.Close) -> dict[str, Any]:
        s = self.state
        request_id = msg.request_id
        if request_id and request_id in s.commands:
            return s.commands[request_id]
        if not s.is_open:
            return {"rejected": "run_not_active"}
        now = self.host.clock.now()
        command_id = msg.command_id or self.host.ids.ulid(now)
        em = decide_control.cancel_or_terminate(s, msg.kind, msg.reason, command_id, now)
        return await self._commit_command(em, request_id, command_id)

    async def _on_append_message(self, msg: m.AppendMessage) -> dict[str, Any]:
        """A repeated message id gets its original receipt even once the run has closed: the
        caller's retry of an append that landed must not read as a refusal."""
        s = self.state
        em, position, duplicate = message_streams.append(s, msg.stream, msg.message_id, msg.payload, msg.command_id,
                                                         self.host.clock.now())
        if duplicate:
            return {"position": position, "duplicate": True}
        refusal = self._input_refusal()
        if refusal is not None:
            return refusal
        await self.commit(em)
        return {"position": position, "duplicate": False}

    def _input_refusal(self) -> dict[str, Any] | None:
        """Why a new signal or message cannot be recorded now (None when it can)."""
        s = self.state
        if not s.is_open:
            return {"rejected": "run_not_active"}
        if history_full(s, self.host.limits):
            return {"rejected": "history_limit_exceeded"}
        if signals_full(s, self.host.limits):
            return {"rejected": "pending_signal_limit_exceeded"}
        return None

    async def _on_update(self, msg: m.Update) -> dict[str, Any]:
        s = self.state
        request_id = msg.request_id
        if request_id and request_id in s.commands:
            return s.commands[request_id]  # a client retry: the receipt of the first, not a second update
        if not s.is_open:
            return {"rejected": "run_not_active"}
        if history_full(s, self.host.limits):
            return {"rejected": "history_limit_exceeded"}
        em = decide_control.update(s, msg.name, msg.arguments, msg.command_id, msg.update_id, self.host.clock.now())
        return await self._commit_command(em, request_id, msg.command_id, update_id=msg.update_id)

    async def _commit_command(self, em: Emitter, request_id: str | None, command_id: str, **extra: Any) -> dict[str, Any]:
        answer = {"sequence": em.records[0].sequence, "command_id": command_id, **extra}
        if request_id:
            em.internal("command", request_id=request_id, answer=answer)
        await self.commit(em)
        return answer

    async def _on_child_closed(self, msg: m.ChildClosed) -> None:
        """A child's run closed (or continued): resolve or re-link the step that started it."""
        s = self.state
        seq = next((c.seq for c in s.children.values() if c.run_id == msg.child_run_id), None)
        if seq is None or not s.is_open:
            return
        info = await self.host.terminal_info(msg.child_run_id)
        if info is None:
            return
        now = self.host.clock.now()
        if info["event"] == "WorkflowContinuedAsNew":
            em = decide_control.child_continued(s, seq, info["continued_to"], info["run_number"] + 1, now)
        else:
            em = decide_control.child_closed(s, seq, info, now)
        await self.commit(em)

    def _on_terminal_info(self) -> dict[str, Any] | None:
        s = self.state
        if s.status not in TERMINAL:
            return None
        last = s.events[-1]
        info = {"event": last["event_type"], "payload": last["payload"], "run_id": self.run_id,
                "run_number": s.meta.get("run_number", 1), "closed_at": s.closed_at}
        if last["event_type"] == "WorkflowContinuedAsNew":
            info["continued_to"] = last["payload"]["continued_to_run_id"]
        return info

    def _on_check_children(self) -> None:
        """After activation, ask children that may have closed while we were away, and apply the
        parent-close policies a crash left unrecorded."""
        for child in list(self.state.children.values()):
            self.host.post(self.run_id, m.ChildClosed(child_run_id=child.run_id))
        self._apply_parent_close()
        self._request_children()

    async def _on_child_request_done(self, msg: m.ChildRequestDone) -> None:
        owed = self.state.child_requests.get(msg.child_run_id)
        self._requesting.discard(msg.child_run_id)
        if owed is None or owed.get("done"):
            return
        if msg.outcome == "failed":
            log.warning("run %s: the cooperative request for child %s could not be delivered: %s", self.run_id, msg.child_run_id, msg.error)
        em = Emitter(self.state, self.host.clock.now())
        em.internal("coop_child_done", run=msg.child_run_id, outcome=msg.outcome)
        await self.commit(em)

    async def _on_parent_close_done(self, msg: m.ParentCloseDone) -> None:
        em = decide_control.parent_close_done(self.state, msg.child_run_id, msg.outcome, msg.error, self.host.clock.now())
        await self.commit(em)

    async def _on_start_run(self, msg: m.StartRun) -> m.RunView:
        if self.state.status == "new":
            now = self.host.clock.now()
            em = Emitter(self.state, now)
            if msg.meta.get("redrive"):  # the failed run's history up to its failed step (actors.redrive)
                em.records.extend(redrive.opening(msg.meta, await self.read_journal(msg.meta["redrive"]["from"])))
            else:
                em.records.extend(started_records(msg.meta, msg.meta["started_at"], accepted=msg.accepted))
            if standalone.is_host(msg.meta):  # its one activity is scheduled with the start (extended §8.1)
                em.records.append(standalone.scheduled_record(msg.meta, len(em.records) + 1, msg.meta["started_at"]))
            if msg.meta.get("message_streams"):  # a continuation: its streams' cursors and unread messages first
                em.records.extend(message_streams.seed_records(msg.meta, len(em.records) + 1, msg.meta["started_at"]))
            em.instances.append(msg.instance)
            try:
                await self.commit(em)
            except ConflictError:
                # The store holds this workflow id in another namespace: a start there won a race
                # the runtime's check could not see (it may run on another node).
                workflow_id = msg.instance.workflow_id
                raise ProtocolError(
                    409, "workflow_id_reserved_in_namespace",
                    f"Workflow [{workflow_id}] is already reserved in another namespace.", workflow_id=workflow_id,
                ) from None
            self._after_change()
        return views.run_view(self.state, self.visible)

    async def _on_runs_started(self, msg: m.RunsStarted) -> None:
        confirmed = [run_id for run_id in msg.run_ids if run_id in self.state.pending_starts]
        if confirmed:
            em = Emitter(self.state, self.host.clock.now())
            for run_id in confirmed:
                em.internal("run_started", run=run_id)
            await self.commit(em)
