"""Worker registrations and the long polls that hand tasks to them."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from actors import messages as m
from actors.run_actor import NotOwner, RunNotFound, RunUnavailable
from actors.task_queue import Offer
from persistence.journal import Batch, ObjectRow, WorkerRow

from . import poll_recovery
from .engine import Engine
from .errors import ProtocolError
from .router import Unreachable

log = logging.getLogger("dw.workers")

HEARTBEAT_INTERVAL = 30
RECEIPT_RETENTION_SECONDS = 86400  # a fenced deregistration's receipt answers repeats this long (extended §11.2)
RECEIPT_KIND = "worker_deregistration"
POLL_MEMORY_SECONDS = 2 * 60 + 60
CONTRACTS_FRESH_SECONDS = 5.0  # in a cluster, how old the registrations a contract check reads may be


DRAINING: dict[str, Any] = {"poll_status": "draining"}  # a poll of a draining build's worker (never a task)


class WorkerService:
    def __init__(self, engine: Engine, *, stale_after: float = 60.0) -> None:
        self.engine = engine
        self.stale_after = stale_after  # DW_WORKER_STALE_AFTER_SECONDS: the one staleness every view and route uses
        self.workers: dict[tuple[str, str], WorkerRow] = {}
        self._polls: dict[tuple[str, str, str, str], dict[str, Any]] = {}
        self._inflight: dict[tuple[str, str, str, str], trio.Event] = {}
        self._loaded_at = 0.0
        self.validators_seen: dict[tuple[str, str, str], set[str]] = {}
        self._receipts: dict[tuple[str, str], dict[str, Any]] = {}  # (namespace, worker id) -> the last fenced receipt
        self.sessions: Any = None  # WorkerSessionService (set by the node): admits in-session activities
        # (namespace, queue, build) -> whether that build cohort is draining (runtime.build_ids, set by the node)
        self.draining: Callable[[str, str, str | None], Awaitable[bool]] | None = None
        # Offers that are not a run's task (an update validation task): what ``needs`` marks
        # them -> who hands them out (set by the node).
        self.special_claims: dict[str, Callable[[Offer, str], dict[str, Any] | None]] = {}

    async def load(self) -> None:
        """The registrations as the journal holds them: one deregistered through another node
        is gone here too; a fresher last contact this node saw itself is kept."""
        fresh: dict[tuple[str, str], WorkerRow] = {}
        for row in await self.engine.journal.list_workers():
            key = (row.namespace, row.worker_id)
            known = self.workers.get(key)
            if known is not None and known.info.get("registration_token") == row.info.get("registration_token"):
                row.last_seen = max(row.last_seen, known.last_seen)
            fresh[key] = row
            self._note_validators(row)
        self.workers = fresh

    def _note_validators(self, row: WorkerRow) -> None:
        """Update validators a workflow type of a queue declared are remembered beyond its
        workers' registrations: with every worker gone, its updates still need validating
        (and are refused until a validating worker is back) rather than slipping through."""
        for workflow_type, contract in (row.info.get("workflow_command_contracts") or {}).items():
            names = contract.get("update_validators") if isinstance(contract, dict) else None
            if names:
                key = (row.namespace, row.task_queue, workflow_type)
                self.validators_seen.setdefault(key, set()).update(n for n in names if isinstance(n, str))

    def forget_namespace(self, namespace: str) -> None:
        for key in [k for k in self.workers if k[0] == namespace]:
            del self.workers[key]

    async def register(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        now = self.engine.clock.now()
        worker_id = body["worker_id"]
        existing = self.workers.get((namespace, worker_id))
        info = {
            k: body.get(k)
            for k in (
                "sdk_version",
                "supported_workflow_types",
                "supported_activity_types",
                "workflow_command_contracts",
                "workflow_definition_fingerprints",
                "capabilities",
                "max_concurrent_workflow_tasks",
                "max_concurrent_activity_tasks",
                "task_slots",
                "process_metrics",
                "build_id",
                "max_concurrent_worker_sessions",
            )
            if body.get(k) is not None
        }
        if isinstance(info.get("build_id"), str):
            info["build_id"] = info["build_id"].strip() or None  # an empty build id means none (extended §10.1)
            if info["build_id"] is None:
                del info["build_id"]
        info["registration_token"] = secrets.token_hex(16)  # a new generation: its predecessor cannot deregister it
        row = WorkerRow(
            namespace, worker_id, body["task_queue"], body["runtime"],
            existing.registered_at if existing else now, now, info,
        )
        await self.engine.journal.append(Batch(workers=[row]))
        self.workers[(namespace, worker_id)] = row
        self._note_validators(row)
        log.info("worker %s registered on %s/%s (%s)", worker_id, namespace, row.task_queue, row.runtime)
        return {
            "worker_id": worker_id,
            "registered": True,
            "registration_token": info["registration_token"],
            "heartbeat_interval_seconds": HEARTBEAT_INTERVAL,
            "stale_after_seconds": int(self.stale_after),
        }

    def is_stale(self, row: WorkerRow, now: float) -> bool:
        return now - row.last_seen >= self.stale_after

    def heartbeat(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        row = self.workers.get((namespace, body["worker_id"]))
        if row is None:
            raise ProtocolError(404, "worker_not_registered", f"Worker [{body['worker_id']}] is not registered.")
        for key in ("task_slots", "process_metrics"):
            if isinstance(body.get(key), dict):
                row.info[key] = body[key]
        # Kept on the node that heard it: an upsert of the row could bring back a registration
        # another node has just deleted.
        row.last_seen = self.engine.clock.now()
        return {
            "worker_id": row.worker_id,
            "acknowledged": True,
            "heartbeat_interval_seconds": HEARTBEAT_INTERVAL,
            "stale_after_seconds": int(self.stale_after),
        }

    async def deregister_fenced(self, namespace: str, worker_id: str, token: str) -> dict[str, Any]:
        """Deregister only the registration generation ``token`` names; a repeat of a done one
        gets its receipt again (the reply may have been lost), a stale or foreign token is
        refused and the current registration stays (extended §11.2)."""
        receipt = await self._receipt(namespace, worker_id)
        if receipt is not None and receipt["registration_token"] == token:
            return receipt
        row = self.workers.get((namespace, worker_id))
        if row is None and self.engine.owned is not None:
            await self.load()
            row = self.workers.get((namespace, worker_id))
        if row is None:
            raise ProtocolError(404, "worker_not_found", f"Worker [{worker_id}] was not found.", worker_id=worker_id)
        if row.info.get("registration_token") != token:
            raise ProtocolError(
                409, "registration_token_mismatch",
                f"The registration token is not the current one of worker [{worker_id}] (it re-registered since); "
                "the current registration stays.", worker_id=worker_id, registration_token=token,
            )
        receipt = {**await self.deregister(namespace, worker_id), "registration_token": token}
        now = self.engine.clock.now()
        self._receipts[(namespace, worker_id)] = receipt
        await self.engine.journal.append(Batch(objects=[ObjectRow(namespace, RECEIPT_KIND, worker_id, {"receipt": receipt, "at": now}, now)]))
        return receipt

    async def _receipt(self, namespace: str, worker_id: str) -> dict[str, Any] | None:
        receipt = self._receipts.get((namespace, worker_id))
        if receipt is not None:
            return receipt
        rows = [r for r in await self.engine.journal.list_objects(RECEIPT_KIND, namespace) if r.name == worker_id]
        if not rows or self.engine.clock.now() - float(rows[0].body.get("at") or 0) > RECEIPT_RETENTION_SECONDS:
            return None
        return dict(rows[0].body["receipt"])

    async def deregister(self, namespace: str, worker_id: str) -> dict[str, Any]:
        row = self.workers.pop((namespace, worker_id), None)
        if row is None:
            raise ProtocolError(404, "worker_not_found", f"Worker [{worker_id}] was not found.", worker_id=worker_id)
        row.deleted = True
        await self.engine.journal.append(Batch(workers=[row]))
        for (_kind, ns, _queue), q in self.engine.queues.items():
            if ns == namespace:
                q.release_worker(worker_id)  # its sticky tasks are anyone's now
        recovered = activities = 0
        # Each live run of the namespace checks the leases itself (worker ids are unique per
        # namespace only: another namespace's worker of the same id keeps its leases).
        for run_id in self.engine.live_run_ids(namespace):
            try:
                tasks, attempts = await self.engine.ask(run_id, m.ReleaseOwner(namespace=namespace, owner=worker_id))
            except (NotOwner, RunNotFound, RunUnavailable):
                continue  # it moved, vanished or failed meanwhile: its leases expire on their own
            recovered += tasks
            activities += attempts
        log.info("worker %s deregistered; %d workflow task(s) and %d activity attempt(s) released", worker_id, recovered, activities)
        return {"worker_id": worker_id, "outcome": "deregistered", "recovered_workflow_task_count": recovered,
                "recovered_activity_task_count": activities}

    async def registration(self, namespace: str, worker_id: str, queue: str, build: str | None = None) -> WorkerRow:
        """The worker's registration for a poll on ``queue``; ``build``: the build id the poll
        names, which must be the registration's (the registration's is authoritative)."""
        row = self.workers.get((namespace, worker_id))
        if row is None and self.engine.owned is not None:
            await self.load()  # registered through another node of the cluster
            row = self.workers.get((namespace, worker_id))
        if row is None:
            raise ProtocolError(
                412,
                "worker_not_registered",
                "Worker must be registered before polling. Call POST /worker/register first.",
                worker_id=worker_id,
            )
        if row.task_queue != queue:
            raise ProtocolError(
                409,
                "task_queue_mismatch",
                f"Worker [{worker_id}] is registered on task queue [{row.task_queue}], not [{queue}].",
                registered_task_queue=row.task_queue,
                requested_task_queue=queue,
            )
        if build is not None and build.strip() and build.strip() != (row.info.get("build_id") or None):
            raise ProtocolError(
                409, "build_id_mismatch",
                f"Worker [{worker_id}] registered with build id [{row.info.get('build_id')}], not [{build.strip()}]; register again.",
                registered_build_id=row.info.get("build_id"), requested_build_id=build.strip(),
            )
        row.last_seen = self.engine.clock.now()
        return row

    async def held_draining(self, namespace: str, row: WorkerRow, hold: float) -> bool:
        """A worker of a draining build claims nothing: its poll is held to its timeout (never
        answered at once, which would be a busy loop) and says so (extended §10.1)."""
        if self.draining is None or not await self.draining(namespace, row.task_queue, row.info.get("build_id") or None):
            return False
        with trio.move_on_after(hold):
            await self.engine.draining.wait()
        return True

    async def poll(
        self, kind: str, namespace: str, body: dict[str, Any], hold: float, *, rerouted: bool = False
    ) -> dict[str, Any] | None:
        """``rerouted``: a member re-sent this poll after losing the queue's former home; what
        that home gave it may be leased somewhere (``runtime.poll_recovery``)."""
        worker_id, queue = body["worker_id"], body["task_queue"]
        page_size = body.get("history_page_size") or 500
        row = await self.registration(namespace, worker_id, queue, body.get("build_id"))
        if await self.held_draining(namespace, row, hold):
            return DRAINING
        kinds = frozenset(f"task_kind:{k}" for k in body.get("task_kinds") or () if k != "workflow")  # multiplexed (§4.1)
        request_id = body.get("poll_request_id")
        if not request_id:
            return await self._poll(kind, namespace, row, queue, hold, page_size, kinds=kinds)
        key = (kind, namespace, worker_id, request_id)
        while key in self._inflight:
            await self._inflight[key].wait()
        remembered = self._polls.get(key)
        if remembered is not None:
            task = await self._replay(kind, remembered, page_size)
            if task is not None:
                return task
        done = self._inflight[key] = trio.Event()
        try:
            task = None
            if rerouted:
                task = await poll_recovery.replay_anywhere(self.engine, kind, namespace, worker_id, request_id, page_size)
            if task is None:
                task = await self._poll(kind, namespace, row, queue, hold, page_size, request_id, kinds=kinds)
            if task is not None and task is not DRAINING:
                self._remember(key, kind, task)
            return task
        finally:
            del self._inflight[key]
            done.set()

    async def declared(self, namespace: str, queue: str, workflow_type: str, kind: str) -> set[str] | None:
        """The ``kind`` names (``signals`` or ``updates``) the live workers of ``queue`` declare for
        ``workflow_type`` in their command contracts; None when none of them reports a contract
        for it (then nothing can be refused: the workflow code decides)."""
        now = self.engine.clock.now()
        if self.engine.owned is not None and now - self._loaded_at > CONTRACTS_FRESH_SECONDS:
            self._loaded_at = now
            await self.load()  # workers registered through another member
        names: set[str] = set()
        seen = False
        for (ns, _), row in self.workers.items():
            if ns != namespace or row.task_queue != queue or self.is_stale(row, now):
                continue
            contract = (row.info.get("workflow_command_contracts") or {}).get(workflow_type)
            if isinstance(contract, dict):
                seen = True
                names.update(n for n in contract.get(kind) or [] if isinstance(n, str))
        return names if seen else None

    async def has_capability(self, namespace: str, worker_id: str, capability: str) -> bool:
        """Whether the worker registered with ``capability`` (registered through another member: read)."""
        row = self.workers.get((namespace, worker_id))
        if row is None and self.engine.owned is not None:
            await self.load()
            row = self.workers.get((namespace, worker_id))
        return row is not None and capability in (row.info.get("capabilities") or [])

    def note_sticky_metrics(self, namespace: str, worker_id: str, metrics: dict[str, int] | None) -> None:
        """The sticky cache counters a worker reports with its completions, for operator views."""
        row = self.workers.get((namespace, worker_id))
        if row is not None and metrics is not None:
            row.info["sticky_cache_metrics"] = dict(metrics)

    async def claim_here(
        self, kind: str, offer: Offer, owner: str, page_size: int, poll_id: str | None = None
    ) -> dict[str, Any] | None:
        """Claim an offered task from its run's actor on this node (``NotOwner`` when it lives elsewhere)."""
        if kind == "workflow":
            message: m.Message = m.ClaimWorkflowTask(task_id=offer.task_id, owner=owner, page_size=page_size, poll_id=poll_id)
            return await self.engine.ask(offer.run_id, message)  # type: ignore[no-any-return]
        assert offer.seq is not None
        return await self.engine.ask(offer.run_id, m.ClaimActivity(seq=offer.seq, owner=owner, poll_id=poll_id))  # type: ignore[no-any-return]

    async def claim(
        self, kind: str, offer: Offer, owner: str, page_size: int, poll_id: str | None = None
    ) -> dict[str, Any] | None:
        """Claim an offered task from its run, on this node or on the node owning the run."""
        try:
            return await self.claim_here(kind, offer, owner, page_size, poll_id)
        except NotOwner:
            try:
                reply = await self.engine.router.call_run(
                    offer.run_id, "claim", kind=kind, task_id=offer.task_id, seq=offer.seq, owner=owner, page_size=page_size,
                    poll_id=poll_id,
                )
            except Unreachable:
                return None  # the run's owner will offer it again once it is reachable
            return reply.get("task")

    def _remember(self, key: tuple[str, str, str, str], kind: str, task: dict[str, Any]) -> None:
        now = self.engine.clock.now()
        if len(self._polls) > 10_000:
            self._polls = {k: v for k, v in self._polls.items() if v["at"] > now - POLL_MEMORY_SECONDS}
        self._polls[key] = {
            "at": now,
            "run_id": task["run_id"],
            "task_id": task["task_id"],
            "owner": task["lease_owner"],
            "attempt": task.get("workflow_task_attempt") or task.get("attempt_number"),
        }

    async def _replay(self, kind: str, remembered: dict[str, Any], page_size: int) -> dict[str, Any] | None:
        if self.engine.clock.now() - remembered["at"] > POLL_MEMORY_SECONDS:
            return None
        task_id, owner, attempt = remembered["task_id"], remembered["owner"], remembered["attempt"]
        try:
            if kind == "workflow":
                return await self.engine.ask(
                    remembered["run_id"], m.ReplayWorkflowTask(task_id=task_id, owner=owner, attempt=attempt, page_size=page_size)
                )
            return await self.engine.ask(remembered["run_id"], m.ReplayActivity(task_id=task_id, owner=owner, attempt=attempt))
        except NotOwner:
            return None  # the run lives elsewhere now: poll afresh

    async def _poll(
        self, kind: str, namespace: str, row: WorkerRow, queue: str, hold: float, page_size: int = 500,
        poll_id: str | None = None, *, kinds: frozenset[str] = frozenset(),
    ) -> dict[str, Any] | None:
        types_key = "supported_workflow_types" if kind == "workflow" else "supported_activity_types"
        types = set(row.info.get(types_key) or [])

        def accepts(name: str) -> bool:
            return not types or name in types

        caps = frozenset(c for c in row.info.get("capabilities") or [] if isinstance(c, str)) | kinds
        build = row.info.get("build_id") or None
        q = self.engine.queue(kind, namespace, queue)
        end = trio.current_time() + hold
        skip: set[str] = set()  # in-session tasks this poller may not take (another worker's session)
        while True:
            offer = await q.take(accepts, end - trio.current_time(), self.engine.draining, row.worker_id, caps, build, skip)
            if offer is None:
                return None
            if self.draining is not None and await self.draining(namespace, queue, build):
                q.offer(offer)  # its build was drained while this poll was parked: the task is someone else's
                with trio.move_on_at(end):
                    await self.engine.draining.wait()
                return DRAINING
            special = self.special_claims.get(offer.needs or "")
            if special is not None:
                task = special(offer, row.worker_id)
                if task is not None:
                    return task
                continue
            grant = None
            if offer.session is not None and self.sessions is not None:
                grant = await self.sessions.admit(namespace, offer.session, row, offer.task_id, offer.run_id)
                if grant is None:
                    skip.add(offer.task_id)
                    q.offer(offer)  # the session is another worker's, or full: for its holder, later
                    continue
            try:
                with trio.CancelScope(shield=True):
                    task = await self.claim(kind, offer, row.worker_id, page_size, poll_id)
            except Exception:  # noqa: BLE001 - a vanished or broken run must not fail the poll
                log.exception("claim of %s failed; polling on", offer.task_id)
                task = None
            if grant is not None:
                if task is None:
                    self.sessions.release(namespace, offer.session["session_id"], offer.task_id)
                else:
                    task["worker_session"] = grant
            if task is not None:
                return task
