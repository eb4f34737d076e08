"""A run actor's answers to operator commands (extended spec §9): repair, archive, debug."""

from __future__ import annotations

from typing import Any

from persistence import codec

from . import decide_operator, journal_retry, redrive
from . import messages as m
from .emit import Emitter, NewRun
from .host import ActorParts
from .records import Record, from_stored, internal_record


class OperatorHandlers(ActorParts):
    async def _on_repair_run(self, msg: m.RepairRun) -> dict[str, Any]:
        s = self.state
        if not s.is_open:
            return {"rejected": "run_not_active"}
        em, outcome = decide_operator.repair(s, self.host.clock.now(), msg.command_id)
        await self.commit(em)
        return {"outcome": outcome, "command_id": msg.command_id if em.records else None,
                "sequence": em.records[-1].sequence if em.records else None}

    async def _on_archive(self, msg: m.Archive) -> dict[str, Any]:
        s = self.state
        if s.is_open:
            return {"rejected": "run_not_closed"}
        em, outcome = decide_operator.archive(s, self.host.clock.now(), msg.command_id, msg.reason)
        await self.commit(em)
        archived = s.archived or {}
        return {"outcome": outcome, "command_id": archived.get("command_id"), "archived_at": archived.get("at"),
                "reason": archived.get("reason")}

    async def read_journal(self, run_id: str) -> list[Record]:
        return [from_stored(codec.loads(body)) for body in await journal_retry.read_records(self.host.journal, run_id)]

    async def _on_redrive(self, msg: m.Redrive) -> dict[str, Any]:
        """Create the run that continues this failed one (actors.redrive); a repeated request id
        gets the first receipt, even once this run is no longer current."""
        s = self.state
        key = msg.request_id or ""
        if key and key in s.redrives:
            return {**s.redrives[key], "duplicate": True}
        if not msg.current:
            return {"rejected": "selected_run_not_current"}
        try:
            before = redrive.cut(s)
            now = self.host.clock.now()
            new_run = self.host.ids.run_ulid(s.meta.get("shard", 0), now)
            meta = redrive.new_meta(s, new_run, now, before)
            redrive.check(meta, await self.read_journal(self.run_id))
        except redrive.NotRedrivable as exc:
            return {"rejected": "run_not_redrivable", "message": str(exc)}
        em = Emitter(s, now)
        em.records.append(internal_record("redriven", now, request_id=msg.request_id, command_id=msg.command_id, start=meta))
        em.new_runs.append(NewRun(new_run, meta))
        await self.commit(em)
        return {"run_id": new_run, "command_id": msg.command_id, "duplicate": False}
