"""Worker sessions (extended spec §11.1): a named lease one registered worker holds (a GPU, a
mounted volume, a warm model), so that activities scheduled ``worker_session=…`` run only on
the holder, a few at a time, and move to another capable worker only once the holder is lost.

A session lives on the home node of its task queue, where that queue's polls are answered, so
admitting an in-session activity to a poller and the session routes see one state. The state is
a small journal object per session (it survives a restart). What a session's status is now —
active, expired (lease ran out), orphaned (its holder went stale or deregistered), closed (by
its holder or its TTL) — is worked out from the stored fields and the clock by ``status``, a
plain function, like every decision below; the service only reads, decides and writes.
"""

from __future__ import annotations

from typing import Any

from actors import messages as m
from actors.run_actor import NotOwner, RunNotFound, RunUnavailable
from persistence.ids import iso
from persistence.journal import Batch, ObjectRow, WorkerRow

from .engine import Engine
from .errors import ProtocolError
from .router import Unreachable
from .workers import WorkerService

KIND = "worker_session"
REACQUIRABLE = ("expired", "failed", "orphaned")
OPTION_DEFAULTS = {"lease_seconds": 120, "ttl_seconds": 1800, "max_concurrent_activities": 1, "create_if_missing": True,
                   "allow_reacquire_after_failure": True}


# --- rules: plain functions over a session's stored fields ---------------------------------


def status(session: dict[str, Any], now: float, holder_live: bool) -> tuple[str, str | None]:
    """(status, failure reason) of a stored session at ``now``."""
    if session["status"] == "closed":
        return "closed", session.get("failure_reason")
    if now >= session["ttl_expires_at"]:
        return "closed", "ttl_expired"
    if not holder_live:
        return "orphaned", "worker_heartbeat_stale"
    if now >= session["lease_expires_at"]:
        return "expired", "lease_expired"
    return "active", None


def new_session(namespace: str, queue: str, options: dict[str, Any], owner: str, now: float) -> dict[str, Any]:
    return {
        "session_id": options["session_id"], "namespace": namespace, "queue": queue,
        "requirements": list(options.get("requirements") or []), "status": "active", "lease_owner": owner,
        "lease_expires_at": now + options["lease_seconds"], "ttl_expires_at": now + options["ttl_seconds"],
        "closed_at": None, "failure_reason": None, "created_at": now, "updated_at": now, "last_heartbeat_at": now,
        **{k: options[k] for k in OPTION_DEFAULTS},
    }


def missing_requirements(session: dict[str, Any], capabilities: list[Any]) -> list[str]:
    return [r for r in session["requirements"] if r not in capabilities]


def snapshot(session: dict[str, Any], now: float, holder: WorkerRow | None, holder_live: bool, active: int) -> dict[str, Any]:
    state, reason = status(session, now, holder_live)
    return {
        "session_id": session["session_id"], "namespace": session["namespace"], "queue": session["queue"],
        "requirements": session["requirements"], "status": state, "lease_owner": session["lease_owner"],
        "holder": None if holder is None else {
            "worker_id": holder.worker_id, "task_queue": holder.task_queue, "status": "active" if holder_live else "stale",
            "last_heartbeat_at": iso(holder.last_seen), "is_stale": not holder_live,
        },
        "lease_expires_at": iso(session["lease_expires_at"]), "ttl_expires_at": iso(session["ttl_expires_at"]),
        "closed_at": iso(session["closed_at"] if session["status"] == "closed" else (session["ttl_expires_at"] if state == "closed" else None)),
        "failure_reason": reason, **{k: session[k] for k in OPTION_DEFAULTS},
        "active_activity_count": active, "last_heartbeat_at": iso(session["last_heartbeat_at"]),
        "created_at": iso(session["created_at"]), "updated_at": iso(session["updated_at"]),
    }


# --- the service ----------------------------------------------------------------------------


class WorkerSessionService:
    def __init__(self, engine: Engine, workers: WorkerService) -> None:
        self.engine = engine
        self.workers = workers
        self.sessions: dict[tuple[str, str], dict[str, Any]] = {}
        self.admitted: dict[tuple[str, str], dict[str, str]] = {}  # session -> {activity task id: run id} handed out here
        self._loaded = False

    async def _load(self) -> None:
        if not self._loaded:
            for row in await self.engine.journal.list_objects(KIND):
                self.sessions[(row.namespace, row.name)] = dict(row.body)
            self._loaded = True

    async def _save(self, session: dict[str, Any]) -> None:
        now = self.engine.clock.now()
        session["updated_at"] = now
        key = (session["namespace"], session["session_id"])
        await self.engine.journal.append(Batch(objects=[ObjectRow(key[0], KIND, key[1], dict(session), now)]))
        self.sessions[key] = session

    def _holder(self, session: dict[str, Any], now: float) -> tuple[WorkerRow | None, bool]:
        row = self.workers.workers.get((session["namespace"], session["lease_owner"]))
        return row, row is not None and not self.workers.is_stale(row, now)

    async def _active(self, key: tuple[str, str]) -> int:
        """In-session attempts still running: each one handed out here is checked with its run."""
        handed = self.admitted.get(key, {})
        for task_id, run_id in list(handed.items()):
            try:
                view = await self.engine.ask(run_id, m.ReadActivity(execution_id=task_id))
                running = view is not None and view.status == "running"
            except NotOwner:
                try:
                    running = bool((await self.engine.router.call_run(run_id, "activity_running", execution_id=task_id)).get("running"))
                except Unreachable:
                    running = True  # unknown: keep counting it until its owner answers
            except (RunNotFound, RunUnavailable):
                running = False
            if not running:
                handed.pop(task_id, None)
        return len(handed)

    def _reply(self, session: dict[str, Any], outcome: str, http: int, active: int) -> dict[str, Any]:
        now = self.engine.clock.now()
        holder, live = self._holder(session, now)
        return {"admitted": True, "outcome": outcome, "status": http, "reason": None,
                "session": snapshot(session, now, holder, live, active)}

    def _refuse(self, http: int, reason: str, message: str, session: dict[str, Any] | None = None, **extra: Any) -> ProtocolError:
        now = self.engine.clock.now()
        body: dict[str, Any] = {"admitted": False, "outcome": None, **extra}
        if session is not None:
            holder, live = self._holder(session, now)
            body["session"] = snapshot(session, now, holder, live, len(self.admitted.get((session["namespace"], session["session_id"]), {})))
        else:
            body["session"] = None
        error = ProtocolError(http, reason, message, **body)
        error.extra["status"] = http  # the reply's own field (extended §11.1), beside the envelope's reason
        return error

    async def acquire(self, namespace: str, row: WorkerRow, options: dict[str, Any], *, explicit: bool) -> tuple[dict[str, Any], str]:
        """Create, reuse or reacquire ``options``' session for worker ``row``; (session, outcome)."""
        await self._load()
        now = self.engine.clock.now()
        queue = options.get("queue") or row.task_queue
        if queue != row.task_queue:
            raise self._refuse(409, "session_queue_mismatch", f"Session queue [{queue}] is not worker [{row.worker_id}]'s queue "
                               f"[{row.task_queue}].")
        key = (namespace, options["session_id"])
        session = self.sessions.get(key)
        caps = list(row.info.get("capabilities") or [])
        wanted = session if session is not None else {"requirements": list(options.get("requirements") or [])}
        missing = missing_requirements(wanted, caps)
        if missing:
            raise self._refuse(409, "session_requirements_not_met", f"Worker [{row.worker_id}] lacks {', '.join(missing)}.",
                               session, missing_requirements=missing)
        if session is not None:
            holder, live = self._holder(session, now)
            state, _ = status(session, now, live)
            if state == "closed":
                raise self._refuse(409, "session_closed", f"Session [{key[1]}] is closed; its id is not used again.", session)
            if state == "active":
                if session["lease_owner"] != row.worker_id:
                    raise self._refuse(409, "session_owned_by_another_worker",
                                       f"Session [{key[1]}] is held by worker [{session['lease_owner']}].", session)
                session["lease_expires_at"] = max(session["lease_expires_at"], now + session["lease_seconds"])
                await self._save(session)
                return session, "reused"
            if state == "expired" and session["lease_owner"] != row.worker_id and live and await self._active(key) > 0:
                # Its lease ran out while its live holder still runs one of its activities (an
                # attempt's heartbeats go to its run, not here): the holder is not lost yet.
                raise self._refuse(409, "session_owned_by_another_worker",
                                   f"Session [{key[1]}] is still in use by worker [{session['lease_owner']}].", session)
            if not session["allow_reacquire_after_failure"]:
                raise self._refuse(409, "session_reacquire_disallowed", f"Session [{key[1]}] is {state} and may not be reacquired.",
                                   session)
            await self._check_limit(namespace, row)
            if session["lease_owner"] != row.worker_id:
                self.admitted.pop(key, None)  # the lost holder's attempts are not this holder's
            session.update(status="active", lease_owner=row.worker_id, lease_expires_at=now + session["lease_seconds"],
                           failure_reason=None, last_heartbeat_at=now)
            await self._save(session)
            return session, "reacquired"
        if not explicit and not options.get("create_if_missing", True):
            raise self._refuse(404, "session_not_found", f"Session [{key[1]}] does not exist and may not be created here.")
        await self._check_limit(namespace, row)
        session = new_session(namespace, queue, {**OPTION_DEFAULTS, **options}, row.worker_id, now)
        await self._save(session)
        return session, "created"

    async def _check_limit(self, namespace: str, row: WorkerRow) -> None:
        now = self.engine.clock.now()
        limit = int(row.info.get("max_concurrent_worker_sessions") or 10)
        held = sum(1 for (ns, _), s in self.sessions.items()
                   if ns == namespace and s["lease_owner"] == row.worker_id and status(s, now, True)[0] == "active")
        if held >= limit:
            raise self._refuse(409, "worker_session_limit_exceeded", f"Worker [{row.worker_id}] already holds {held} sessions.",
                               max_concurrent_worker_sessions=limit)

    async def create(self, namespace: str, row: WorkerRow, options: dict[str, Any]) -> dict[str, Any]:
        session, outcome = await self.acquire(namespace, row, options, explicit=True)
        key = (namespace, session["session_id"])
        return self._reply(session, outcome, 201 if outcome == "created" else 200, await self._active(key))

    async def _owned(self, namespace: str, session_id: str, worker_id: str) -> dict[str, Any]:
        await self._load()
        session = self.sessions.get((namespace, session_id))
        if session is None:
            raise self._refuse(404, "session_not_found", f"Session [{session_id}] was not found.")
        if session["lease_owner"] != worker_id:
            raise self._refuse(409, "session_owner_mismatch", f"Session [{session_id}] is held by another worker.", session)
        return session

    async def heartbeat(self, namespace: str, session_id: str, worker_id: str, lease_seconds: int) -> dict[str, Any]:
        session = await self._owned(namespace, session_id, worker_id)
        now = self.engine.clock.now()
        _, live = self._holder(session, now)
        if status(session, now, live)[0] != "active":
            raise self._refuse(409, "session_not_active", f"Session [{session_id}] is not active; create it again.", session)
        session.update(lease_expires_at=max(session["lease_expires_at"], now + lease_seconds), last_heartbeat_at=now)
        await self._save(session)
        return self._reply(session, "heartbeat_recorded", 200, await self._active((namespace, session_id)))

    async def close(self, namespace: str, session_id: str, worker_id: str, reason: str | None) -> dict[str, Any]:
        session = await self._owned(namespace, session_id, worker_id)
        key = (namespace, session_id)
        if session["status"] == "closed":
            return self._reply(session, "already_closed", 200, 0)
        session.update(status="closed", closed_at=self.engine.clock.now(), failure_reason=None, close_reason=reason)
        self.admitted.pop(key, None)
        await self._save(session)
        return self._reply(session, "closed", 200, 0)

    async def admit(self, namespace: str, options: dict[str, Any], row: WorkerRow, task_id: str, run_id: str) -> dict[str, Any] | None:
        """Whether poller ``row`` may take in-session activity ``task_id``: the session (created
        or reacquired if need be) is this worker's and has room. None: leave it to others."""
        try:
            session, _ = await self.acquire(namespace, row, options, explicit=False)
        except ProtocolError:
            return None
        key = (namespace, session["session_id"])
        if await self._active(key) >= session["max_concurrent_activities"]:
            return None
        self.admitted.setdefault(key, {})[task_id] = run_id
        now = self.engine.clock.now()
        return {**{k: v for k, v in options.items()}, "status": "active", "lease_owner": row.worker_id,
                "lease_expires_at": iso(session["lease_expires_at"]), "ttl_expires_at": iso(session["ttl_expires_at"]),
                "session_seen_at": iso(now)}

    def release(self, namespace: str, session_id: str, task_id: str) -> None:
        """An admitted attempt was not claimed after all (the run refused the offer)."""
        self.admitted.get((namespace, session_id), {}).pop(task_id, None)

    async def counts(self, namespace: str) -> dict[str, int]:
        await self._load()
        now = self.engine.clock.now()
        out: dict[str, int] = {}
        for (ns, _), session in self.sessions.items():
            if ns == namespace:
                _, live = self._holder(session, now)
                state = status(session, now, live)[0]
                out[state] = out.get(state, 0) + 1
        return out
