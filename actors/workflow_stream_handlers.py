"""A run actor's answers about its workflow streams (extended spec §7.2): a client's appends
and closes (journaled as ``ws_append`` / ``ws_close``) and the reads subscribers park on."""

from __future__ import annotations

from typing import Any

import trio

from . import messages as m
from . import workflow_streams as ws
from .emit import Emitter
from .errors import ProtocolError
from .host import ActorParts


class WorkflowStreamHandlers(ActorParts):
    changed: trio.Event

    async def _on_stream_append(self, msg: m.StreamAppend) -> dict[str, Any]:
        s = self.state
        if not s.is_open:
            raise _closed(msg.stream, "its run is closed")
        plan = ws.plan_append(s.wstreams, msg.stream, msg.items, msg.max_pending, self.host.limits.stream_items)
        if plan.outcome == "rejected_closed":
            raise _closed(msg.stream, plan.detail)
        if plan.outcome == "rejected_backpressure":
            raise ProtocolError(409, "stream_backpressure", plan.detail + " Read the stream or retry later.",
                                stream_name=msg.stream, retryable=True)
        if plan.fresh or msg.stream not in s.wstreams:
            em = Emitter(s, self.host.clock.now())
            em.internal("ws_append", stream=msg.stream, items=plan.fresh)
            await self.commit(em)  # a replayed request whose items are all known writes nothing
        return {"offsets": plan.offsets, "deduped": plan.deduped, "stream": self._describe(msg.stream)}

    async def _on_stream_close(self, msg: m.StreamClose) -> dict[str, Any]:
        s = self.state
        stream = s.wstreams.get(msg.stream)
        if stream is None or ws.expired(stream, s.closed_at if not s.is_open else None, self.host.clock.now()):
            raise ws.not_found(msg.stream)
        if not s.is_open:
            raise _closed(msg.stream, "its run is closed")
        refusal = ws.close_refusal(s.wstreams, msg.stream)
        if refusal:
            raise _closed(msg.stream, refusal)
        em = Emitter(s, self.host.clock.now())
        em.internal("ws_close", stream=msg.stream, error_reason=msg.error_reason, retention=msg.retention)
        await self.commit(em)
        return {"stream": self._describe(msg.stream)}

    def _on_read_streams(self, msg: m.ReadStreams) -> m.StreamsView:
        s = self.state
        closed_at = None if s.is_open else s.closed_at
        now = self.host.clock.now()
        wf = s.meta["workflow_id"]
        if msg.stream is None:
            listed = [ws.describe(name, st, wf, self.run_id, closed_at)
                      for name, st in sorted(s.wstreams.items()) if not ws.expired(st, closed_at, now)]
            return m.StreamsView(wf, self.run_id, listed, [], 0, False, self.changed)
        stream = s.wstreams.get(msg.stream)
        if stream is None and msg.start is not None and s.is_open:
            # A subscriber may start before the workflow's first append: it reads an empty open
            # stream (and parks on it) instead of failing; describe still says it does not exist.
            stream = ws.unborn()
        if stream is None or ws.expired(stream, closed_at, now):
            raise ws.not_found(msg.stream, "" if stream is None else ": its retention ended")
        items: list[dict[str, Any]] = []
        next_offset, terminal = 0, False
        if msg.start is not None:
            items, next_offset, terminal = ws.page(stream, msg.start, msg.limit, closed_at)
        return m.StreamsView(wf, self.run_id, [ws.describe(msg.stream, stream, wf, self.run_id, closed_at)], items,
                             next_offset, terminal, self.changed)

    def _describe(self, name: str) -> dict[str, Any]:
        s = self.state
        return ws.describe(name, s.wstreams[name], s.meta["workflow_id"], self.run_id, None if s.is_open else s.closed_at)


def _closed(name: str, why: str) -> ProtocolError:
    return ProtocolError(409, "stream_closed", f"Workflow stream [{name}] takes no more changes: {why}.", stream_name=name)
