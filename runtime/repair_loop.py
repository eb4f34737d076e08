"""The repair pass in the background: the safety net behind the fast path (ARCHITECTURE.md,
invariant 9: every open run makes progress).

Ready tasks are offered when they become ready, timers wake their runs, an adopted shard's
runs are recovered; this pass assumes any of that can be missed — an offer lost with a queue
home that moved, an activation sent to a node that died, a bug — and every ``interval``
seconds, over the runs this node owns:

* runs in memory: a ready task nobody took in ``redispatch_after`` seconds, or a lease that
  expired, is ticked and offered again; an open run without a task gets one (``SystemOps``);
* runs in the journal: an open run that needs attention (a task, a child, a due time) but that
  nothing on this node is moving — no actor, no ready task in the offer book, no timer — is
  activated, so its tasks are offered and its children asked. A run repaired this way is not
  repaired again before a backoff that doubles each time (up to ``MAX_BACKOFF``), so a run
  that legitimately waits (a parent of a long child) costs little.

Each pass's figures are kept for ``GET /api/system/repair`` and ``cluster/info``.
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from actors import messages as m
from persistence.ids import iso, shard_of_run

from .system_ops import REPAIR_INTERVAL, SystemOps

log = logging.getLogger("dw.repair")

SCAN_LIMIT = 100
FIRST_BACKOFF, MAX_BACKOFF = 5.0, 60.0


class RepairLoop:
    def __init__(self, engine: Any, system: SystemOps, *, interval: float = REPAIR_INTERVAL, scan_limit: int = SCAN_LIMIT) -> None:
        self.engine = engine
        self.system = system
        self.interval = interval
        self.scan_limit = scan_limit
        self._backoff: dict[str, tuple[float, float]] = {}  # run id -> (not before, current backoff)
        system.background = self  # its figures join the operator's view of repair
        self.last: dict[str, Any] = {"passes": 0, "at": None, "dormant_found": 0, "dormant_activated": 0, "repaired": 0,
                                     "failures": 0}

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await trio.sleep(self.interval)
            try:
                await self.pass_once()
            except Exception as exc:  # noqa: BLE001 - the next pass tries again (the journal may be away)
                self.last["failures"] += 1
                log.warning("repair pass failed (%s: %s); the next one tries again", type(exc).__name__, exc)

    def _owned(self, run_id: str) -> bool:
        owned = self.engine.owned
        return owned is None or shard_of_run(run_id) in owned

    async def pass_once(self) -> dict[str, Any]:
        memory = await self.system.repair_pass(None, None)
        rows = await self.engine.journal.runs_to_recover()
        now = self.engine.clock.now()
        busy = self.engine.actors.keys() | self.engine.offers.ready.keys() | self.engine.timers.due.keys()
        dormant = [r.run_id for r in rows if self._owned(r.run_id) and r.run_id not in busy]
        self._backoff = {r: b for r, b in self._backoff.items() if r in dormant}  # moving again: forgiven
        due = [r for r in dormant if self._backoff.get(r, (0.0, 0.0))[0] <= now][: self.scan_limit]
        for run_id in due:
            _, previous = self._backoff.get(run_id, (0.0, 0.0))
            wait = min(MAX_BACKOFF, previous * 2 if previous else FIRST_BACKOFF)
            self._backoff[run_id] = (now + wait, wait)
            self.engine.post(run_id, m.Tick())
            self.engine.post(run_id, m.CheckChildren())
        repaired = memory["repaired_existing_tasks"] + memory["repaired_missing_tasks"]
        if due or repaired:
            log.info("repair pass: %d dormant run(s) activated of %d found, %d task(s) re-dispatched or created",
                     len(due), len(dormant), repaired)
        self.last.update(passes=self.last["passes"] + 1, at=iso(now), dormant_found=len(dormant), dormant_activated=len(due),
                         repaired=self.last["repaired"] + repaired + len(due))
        return {**memory, "dormant_found": len(dormant), "dormant_activated": len(due)}
