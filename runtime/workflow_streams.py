"""Workflow streams on the control plane (extended spec §7.2): list, describe, page or tail,
append and close the output streams of one run.

A tail (``wait_seconds > 0``) parks on the run's next change like a history long poll: no
busy loop, woken by the commit that appends or closes, ended by its deadline or the node
draining. Parked tails are bounded per node; past the bound the client is told to retry.
"""

from __future__ import annotations

from typing import Any

import trio

from actors import messages as m

from .errors import ProtocolError
from .workflows import WorkflowService


class WorkflowStreamService:
    def __init__(self, workflows: WorkflowService, max_parked: int) -> None:
        self.workflows = workflows
        self.engine = workflows.engine
        self.max_parked = max_parked
        self.parked = 0

    async def _ask(self, namespace: str, workflow_id: str, run_id: str, message: m.Message) -> Any:
        await self.workflows.run(namespace, workflow_id, run_id)  # the run is this workflow's, in this namespace
        return await self.engine.ask(run_id, message)

    async def read(self, namespace: str, workflow_id: str, run_id: str, stream: str | None = None) -> m.StreamsView:
        view: m.StreamsView = await self._ask(namespace, workflow_id, run_id, m.ReadStreams(stream=stream))
        return view

    async def items(self, namespace: str, workflow_id: str, run_id: str, stream: str, start: int, limit: int,
                    wait: float) -> m.StreamsView:
        read = m.ReadStreams(stream=stream, start=start, limit=limit)
        view: m.StreamsView = await self._ask(namespace, workflow_id, run_id, read)
        if wait <= 0 or view.items or view.terminal:
            return view
        if self.parked >= self.max_parked:
            raise ProtocolError(
                429, "long_poll_capacity_exhausted",
                f"This node already holds {self.max_parked} waiting stream reads; retry after the advertised delay.",
                retryable=True, retry_after_seconds=1, limit=self.max_parked,
            )
        self.parked += 1
        try:
            with trio.move_on_after(wait):
                while not view.items and not view.terminal and not self.engine.draining.is_set():
                    await view.changed.wait()  # the run's next commit, or its passivation
                    view = await self.engine.ask(run_id, read)
        finally:
            self.parked -= 1
        return view

    async def append(self, namespace: str, workflow_id: str, run_id: str, stream: str, items: list[dict[str, Any]],
                     max_pending: int | None) -> dict[str, Any]:
        answer: dict[str, Any] = await self._ask(
            namespace, workflow_id, run_id, m.StreamAppend(stream=stream, items=items, max_pending=max_pending))
        return answer

    async def close(self, namespace: str, workflow_id: str, run_id: str, stream: str, error_reason: str | None,
                    retention: int | None) -> dict[str, Any]:
        answer: dict[str, Any] = await self._ask(
            namespace, workflow_id, run_id, m.StreamClose(stream=stream, error_reason=error_reason, retention=retention))
        return answer
