"""Operator commands on a workflow's runs (extended spec §9): repair, redrive, archive, debug.

Each resolves the instance's run like any control-plane command (a run on another node answers
``NotOwner`` and the request is forwarded there) and leaves the decision to the run's actor.
"""

from __future__ import annotations

from typing import Any

from actors import messages as m
from actors.run_actor import RunNotFound
from persistence.ids import ulid
from persistence.journal import InstanceRow

from .engine import Engine
from .errors import ProtocolError
from .workflows import CommandResult, WorkflowService, run_not_found


class RunOperations:
    def __init__(self, engine: Engine, workflows: WorkflowService) -> None:
        self.engine = engine
        self.workflows = workflows

    async def repair(self, namespace: str, workflow_id: str) -> CommandResult:
        target = await self.workflows.current(namespace, workflow_id)
        answer = await self.engine.ask(target.run_id, m.RepairRun(command_id=ulid()))
        if answer.get("outcome") == "repair_dispatched":
            self.engine.offers.resend(target.run_id)  # whatever was never taken is offered again now
        return CommandResult(target, None, answer)

    async def archive(self, namespace: str, workflow_id: str, reason: str | None) -> CommandResult:
        target = await self.workflows.current(namespace, workflow_id)
        return CommandResult(target, None, await self.engine.ask(target.run_id, m.Archive(command_id=ulid(), reason=reason)))

    async def debug(self, namespace: str, workflow_id: str, run_id: str | None, include_payload: bool) -> dict[str, Any]:
        view = (await self.workflows.describe(namespace, workflow_id, run_id)).run
        snapshot: dict[str, Any] = await self.engine.ask(view.run_id, m.ReadDebug(include_payload=include_payload))
        return snapshot

    async def redrive(self, namespace: str, workflow_id: str, run_id: str, request_id: str | None) -> CommandResult:
        current = await self.workflows.current(namespace, workflow_id)
        named = current if run_id == current.run_id else await self.workflows.run(namespace, workflow_id, run_id)
        if named.namespace != namespace or named.workflow_id != workflow_id:
            raise run_not_found(workflow_id, run_id)
        message = m.Redrive(command_id=ulid(), request_id=request_id, current=named.run_id == current.run_id)
        answer = await self.engine.ask(run_id, message)
        if "rejected" in answer:
            return CommandResult(named, run_id, answer)
        # The new run's start is owed by the failed run; commit it now so the caller can read it.
        if not await self._started(run_id, answer["run_id"]):
            raise ProtocolError(503, "redrive_pending", "The redriven run is being created; retry with the same request_id.",
                                retryable=True)
        new = await self.engine.ask(answer["run_id"], m.Describe())
        self.workflows.remember(InstanceRow(namespace, workflow_id, new.workflow_type, new.run_id, new.run_number,
                                            new.meta.get("instance_created_at", new.started_at)))
        return CommandResult(new, run_id, {**answer, "redriven_from_run_id": run_id})

    async def _started(self, creator: str, run_id: str) -> bool:
        if await self.engine.ensure_started(creator, run_id):
            return True
        try:  # confirmed already (the creator's own launch got there first)
            await self.engine.ask(run_id, m.Describe())
        except RunNotFound:
            return False
        return True
