"""Control-plane operations on workflow instances and runs."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import trio

from actors import message_streams
from actors import messages as m
from actors.emit import new_run_meta
from actors.run_actor import RunNotFound
from actors.standalone import HOST_TYPE
from persistence.ids import run_ulid, shard_of, ulid
from persistence.journal import InstanceRow, Predicate, RunRow
from persistence.vocabulary import STATUS_BUCKETS, decode_offset, encode_offset

from . import history_export, page_tokens, visibility
from .build_ids import build_of
from .engine import Engine
from .errors import ProtocolError, validation
from .keyed_locks import KeyedLocks


def not_found(workflow_id: str) -> ProtocolError:
    return ProtocolError(404, "instance_not_found", "Workflow not found.", workflow_id=workflow_id)


def run_not_found(workflow_id: str, run_id: str) -> ProtocolError:
    return ProtocolError(404, "run_not_found", "Workflow run not found.", workflow_id=workflow_id, run_id=run_id)


def decode_token(token: Any) -> int:
    """An undecodable history token means the start (the reference server's leniency)."""
    if not token:
        return 0
    try:
        return decode_offset(str(token))
    except ValueError:
        return 0


def list_token(started_at: float, run_id: str, fingerprint: str) -> str:
    """A keyset position (stable while runs start and close), bound to the filter it pages."""
    return page_tokens.encode({"v": 1, "s": started_at, "r": run_id, "f": fingerprint})


def read_list_token(token: Any, fingerprint: str) -> tuple[int, tuple[float, str] | None]:
    """(offset, keyset position). A decimal offset token (the reference's) is still read."""
    if not token:
        return 0, None
    try:
        raw = page_tokens.decode_raw(token)
        if raw.isdigit():
            return int(raw), None
        data = json.loads(raw)
        if not isinstance(data, dict) or data.get("v") != 1:
            raise ValueError
        position = (float(data["s"]), str(data["r"]))
    except (ValueError, UnicodeDecodeError, KeyError, TypeError):
        raise ProtocolError(
            400, "invalid_page_token",
            "The next_page_token is not one this server issued; start again without it.",
            errors={"next_page_token": ["The page token is malformed."]},
        ) from None
    if data.get("f") != fingerprint:
        raise ProtocolError(
            400, "page_token_filter_mismatch",
            "The next_page_token belongs to a listing with other filters; use it with the same filters or start over.",
            errors={"next_page_token": ["The page token was issued for different filters."]},
        )
    return 0, position


@dataclass(frozen=True, slots=True)
class Started:
    """A start's outcome: ``started_new``, ``returned_existing_active`` or ``rejected_duplicate``."""

    run: m.RunView
    outcome: str


@dataclass(frozen=True, slots=True)
class Described:
    run: m.RunView
    current: m.RunView  # the instance's current run (the same as ``run`` unless a past run was asked for)


@dataclass(frozen=True, slots=True)
class InstanceRuns:
    workflow_id: str
    current_run_id: str
    runs: list[RunRow]


@dataclass(frozen=True, slots=True)
class RunPage:
    runs: list[RunRow]
    next_page_token: str | None


@dataclass(frozen=True, slots=True)
class CommandResult:
    """A control-plane command delivered to a run: the run, the run id the client named (None:
    the instance's current run), and the actor's answer (its sequence and command id, or
    ``rejected`` with the reason)."""

    target: m.RunView
    requested_run_id: str | None
    answer: dict[str, Any]


@dataclass(frozen=True, slots=True)
class UpdateResult(CommandResult):
    record: dict[str, Any] | None  # the update's record once it was accepted (None when rejected)
    timed_out: bool


class WorkflowService:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.journal = engine.journal
        self.starting = KeyedLocks()  # starts of one id on this node, one at a time (a standalone activity's too)
        self._instances: dict[tuple[str, str], InstanceRow] = {}
        self.search_attributes: Any = None  # SearchAttributeService, set by the node
        self.contracts: Any = None  # WorkerService.declared, set by the node: the workers' command contracts
        self.validation: Any = None  # UpdateValidationService, set by the node
        self.builds: Any = None  # BuildIdService, set by the node: the queue's promoted build for new starts

    async def instance(self, namespace: str, workflow_id: str) -> InstanceRow | None:
        key = (namespace, workflow_id)
        inst = self._instances.get(key)
        if inst is None:
            inst = await self.journal.get_instance(namespace, workflow_id)
            if inst is not None:
                self._instances[key] = inst
        return inst

    def remember(self, inst: InstanceRow) -> None:
        """A run this node just made current (a standalone activity started again)."""
        self._instances[(inst.namespace, inst.workflow_id)] = inst

    async def current(self, namespace: str, workflow_id: str, *, damaged_ok: bool = False) -> m.RunView:
        inst = await self.instance(namespace, workflow_id)
        if inst is None:
            raise not_found(workflow_id)
        try:
            view = await self.engine.ask(inst.current_run_id, m.Describe(allow_damaged=damaged_ok))
            if not view.is_open and inst.workflow_type == HOST_TYPE:
                # A closed job's id can start again (extended §8.2), maybe on another node
                # while this one's cached row stood still: read which run is current now.
                fresh = await self.journal.get_instance(namespace, workflow_id)
                if fresh is not None and fresh.current_run_id != inst.current_run_id:
                    self._instances[(namespace, workflow_id)] = fresh
                    view = await self.engine.ask(fresh.current_run_id, m.Describe(allow_damaged=damaged_ok))
        except RunNotFound:  # its journal is gone (retention, namespace deleted)
            self._instances.pop((namespace, workflow_id), None)
            raise not_found(workflow_id) from None
        # Follow continue-as-new and redrive links the cached instance row does not know yet;
        # the next lookup reads the row afresh instead of walking the chain again.
        while (successor := view.continued_to or view.redriven_to) is not None:
            self._instances.pop((namespace, workflow_id), None)
            try:
                view = await self.engine.ask(successor, m.Describe())
            except RunNotFound:
                # The successor's start is not committed yet (its creator crashed or moved
                # right after creating it): commit it now, from the creator's record.
                if not await self.engine.ensure_started(view.run_id, successor):
                    raise
                view = await self.engine.ask(successor, m.Describe())
        return view

    async def run(self, namespace: str, workflow_id: str, run_id: str) -> m.RunView:
        inst = await self.instance(namespace, workflow_id)
        if inst is None:
            raise not_found(workflow_id)
        if not self.engine.is_live(run_id):
            row = await self.journal.get_run(run_id)
            if row is None or row.workflow_id != workflow_id or row.namespace != namespace:
                raise run_not_found(workflow_id, run_id)
        try:
            view = await self.engine.ask(run_id, m.Describe())
        except RunNotFound:
            raise run_not_found(workflow_id, run_id) from None
        if view.workflow_id != workflow_id or view.namespace != namespace:
            raise run_not_found(workflow_id, run_id)
        return view

    # --- start ---------------------------------------------------------------------

    def forget_namespace(self, namespace: str) -> None:
        """Drop cached instances of a deleted namespace (a re-created one starts empty)."""
        for key in [k for k in self._instances if k[0] == namespace]:
            del self._instances[key]

    async def start(self, namespace: str, req: dict[str, Any]) -> Started:
        workflow_id = req.get("workflow_id") or ulid()
        async with self.starting.hold((namespace, workflow_id)):
            return await self._start_locked(namespace, workflow_id, req)

    async def _start_locked(self, namespace: str, workflow_id: str, req: dict[str, Any]) -> Started:
        wtype = req["workflow_type"]
        inst = self._instances.get((namespace, workflow_id))
        if inst is None:
            found = await self.journal.find_instances(workflow_id)
            inst = next((i for i in found if i.namespace == namespace), None)
            if inst is not None:
                self._instances[(namespace, workflow_id)] = inst
            elif found:
                raise ProtocolError(
                    409,
                    "workflow_id_reserved_in_namespace",
                    f"Workflow [{workflow_id}] is already reserved in another namespace.",
                    workflow_id=workflow_id,
                )
        if inst is not None:
            if inst.workflow_type != wtype:
                raise validation(
                    "workflow_type",
                    f"Workflow instance [{workflow_id}] is reserved for durable type [{inst.workflow_type}] "
                    f"and cannot be reused for [{wtype}].",
                )
            view = await self.current(namespace, workflow_id)
            if req.get("duplicate_policy") == "use-existing" and view.is_open:
                return Started(view, "returned_existing_active")
            return Started(view, "rejected_duplicate")
        now = self.engine.clock.now()
        shard = shard_of(namespace, workflow_id, self.engine.shard_count)
        run_id = run_ulid(shard, now)
        meta = new_run_meta(
            run_id=run_id,
            namespace=namespace,
            workflow_id=workflow_id,
            workflow_type=wtype,
            task_queue=req.get("task_queue"),
            run_number=1,
            arguments=req.get("input"),
            now=now,
            execution_timeout=req.get("execution_timeout_seconds"),
            run_timeout=req.get("run_timeout_seconds"),
            business_key=req.get("business_key"),
            memo=req.get("memo"),
            search_attributes=req.get("search_attributes"),
            command_id=ulid(now),
            shard=shard,
            shard_count=self.engine.shard_count,
        )
        meta["instance_created_at"] = now
        compatibility = build_of(req.get("build_id")) or build_of(req.get("compatibility"))
        if compatibility is None and self.builds is not None:
            compatibility = await self.builds.promoted(namespace, req.get("task_queue"))
        if compatibility is not None:
            meta["compatibility"] = compatibility  # its tasks go to that build's workers only (extended §10.1)
        if req.get("schedule"):
            meta["schedule"] = dict(req["schedule"])
        if req.get("trace"):
            meta["trace"] = req["trace"]  # the client's trace carrier: the run's tasks hand it back (§15.1)
        instance = InstanceRow(namespace, workflow_id, wtype, run_id, 1, now)
        # The run's own actor writes its first records, fenced by its shard's epoch; a shard
        # taken over meanwhile answers NotOwner and the request goes to the new owner.
        view = await self.engine.start_new(run_id, m.StartRun(meta=meta, accepted=True, instance=instance))
        self._instances[(namespace, workflow_id)] = instance
        return Started(view, "started_new")

    # --- reads ---------------------------------------------------------------------

    async def describe(self, namespace: str, workflow_id: str, run_id: str | None = None) -> Described:
        current = await self.current(namespace, workflow_id)
        view = current if run_id is None else await self.run(namespace, workflow_id, run_id)
        return Described(view, current)

    async def list_runs(self, namespace: str, workflow_id: str) -> InstanceRuns:
        current = await self.current(namespace, workflow_id)
        rows = await self.journal.list_instance_runs(namespace, workflow_id)
        runs = []
        for row in rows:
            if self.engine.is_live(row.run_id):  # its row may be a commit behind the actor
                row = (await self.engine.ask(row.run_id, m.Describe())).row
            runs.append(row)
        return InstanceRuns(workflow_id, current.run_id, runs)

    async def list(self, namespace: str, args: dict[str, Any]) -> RunPage:
        size = args["page_size"]
        statuses = list(STATUS_BUCKETS[args["status"]]) if args.get("status") else None
        query = args.get("query")
        predicates: list[Any] = list(args.get("time_filters") or [])
        if args.get("workflow_type") != HOST_TYPE:  # standalone activities are listed on their own (extended §8.1)
            predicates.append(Predicate(op="!=", value=HOST_TYPE, column="workflow_type"))
        if query and visibility.is_filter(query):
            names = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", query))
            custom = await self.search_attributes.types(namespace, names) if self.search_attributes else {}
            predicates += visibility.parse(query, custom)
            query = None
        fingerprint = page_tokens.fingerprint(
            namespace, args.get("workflow_type"), args.get("status"), args.get("query"), args.get("time_key")
        )
        offset, after = read_list_token(args.get("next_page_token"), fingerprint)
        rows = await self.journal.list_runs(
            namespace,
            workflow_type=args.get("workflow_type"),
            statuses=statuses,
            query=query,
            predicates=predicates,
            after=after,
            offset=offset,
            limit=size + 1,
        )
        more = len(rows) > size
        page = rows[:size]
        token = list_token(page[-1].started_at, page[-1].run_id, fingerprint) if more and page else None
        return RunPage(page, token)

    async def history(
        self, namespace: str, workflow_id: str, run_id: str, *, page_size: int, token: Any, wait: bool, hold: float
    ) -> dict[str, Any]:
        await self.run(namespace, workflow_id, run_id)
        after = decode_token(token)
        page = await self.engine.ask(run_id, m.ReadHistory(after=after, limit=page_size))
        if wait and page.visible <= after and page.is_open:
            with trio.move_on_after(hold):
                while page.visible <= after and page.is_open and not self.engine.draining.is_set():
                    await page.changed.wait()  # the run's next commit, or its passivation
                    page = await self.engine.ask(run_id, m.ReadHistory(after=after, limit=page_size))
        end = after + len(page.events)
        return {
            "workflow_id": workflow_id,
            "run_id": run_id,
            "events": page.events,
            "next_page_token": encode_offset(end) if end < page.visible else None,
        }

    async def export(self, namespace: str, workflow_id: str, run_id: str, signing_key: bytes | None, key_id: str | None) -> dict[str, Any]:
        current = await self.current(namespace, workflow_id)
        await self.run(namespace, workflow_id, run_id)
        run = await self.engine.ask(run_id, m.Describe())
        page = await self.engine.ask(run_id, m.ReadHistory(after=0))
        heartbeats = await self.engine.ask(run_id, m.ReadHeartbeats())
        return history_export.build(
            run_id=run_id, meta=run.meta, status=run.status, closed_reason=run.closed_reason, closed_at=run.closed_at,
            last_progress_at=run.last_progress_at, output=run.output, search_attributes=run.search_attributes,
            events=page.events, current_run_id=current.run_id, now=self.engine.clock.now(),
            signing_key=signing_key, key_id=key_id, heartbeats=heartbeats,
        )

    # --- commands ------------------------------------------------------------------

    async def signal(
        self, namespace: str, workflow_id: str, name: str, arguments: Any, run_id: str | None, request_id: str | None = None
    ) -> CommandResult:
        target = await self._target(namespace, workflow_id, run_id)
        if name == message_streams.RESERVED or not await self._declared(target, "signals", name):  # §7.1: not a signal
            return CommandResult(target, run_id, {"rejected": "unknown_signal"})
        answer = await self.engine.ask(
            target.run_id, m.Signal(name=name, arguments=arguments, command_id=ulid(), request_id=request_id)
        )
        return CommandResult(target, run_id, answer)

    async def append_message(self, namespace: str, workflow_id: str, stream: str, message_id: str, payload: Any) -> CommandResult:
        """A message for the instance's current run (extended spec §7.1)."""
        target = await self._target(namespace, workflow_id, None)
        answer = await self.engine.ask(
            target.run_id, m.AppendMessage(stream=stream, message_id=message_id, payload=payload, command_id=ulid())
        )
        return CommandResult(target, None, answer)

    async def _declared(self, target: m.RunView, kind: str, name: str) -> bool:
        """Whether the workers' command contracts allow ``name`` (true when they report none)."""
        if self.contracts is None or not target.is_open:
            return True
        names = await self.contracts(target.namespace, target.task_queue or "default", target.workflow_type, kind)
        return names is None or name in names

    async def update(
        self, namespace: str, workflow_id: str, name: str, arguments: Any, run_id: str | None, request_id: str | None,
        wait_for: str, wait_timeout: float,
    ) -> UpdateResult:
        target = await self._target(namespace, workflow_id, run_id)
        if not await self._declared(target, "updates", name):
            return UpdateResult(target, run_id, {"rejected": "unknown_update"}, None, False)
        if self.validation is not None and target.is_open and await self.validation.required(target, name):
            await self.validation.validate(target, name, arguments, request_id)  # refuses before anything is recorded
        answer = await self.engine.ask(
            target.run_id,
            m.Update(name=name, arguments=arguments, command_id=ulid(), update_id=ulid(), request_id=request_id),
        )
        if "rejected" in answer:
            return UpdateResult(target, run_id, answer, None, False)
        update_id = answer["update_id"]
        timed_out = False
        if wait_for == "completed":
            with trio.move_on_after(wait_timeout) as scope:
                while True:
                    seen = await self.engine.ask(target.run_id, m.ReadUpdate(update_id=update_id))
                    if seen.record is None or seen.record["status"] != "accepted" or self.engine.draining.is_set():
                        break
                    await seen.changed.wait()  # the run's next commit, or its passivation
            timed_out = scope.cancelled_caught
        record = (await self.engine.ask(target.run_id, m.ReadUpdate(update_id=update_id))).record
        return UpdateResult(target, run_id, answer, record, timed_out)

    async def request_cancellation(
        self, namespace: str, workflow_id: str, run_id: str | None, reason: str | None, cleanup_seconds: int | None
    ) -> CommandResult:
        target = await self._target(namespace, workflow_id, run_id)
        answer = await self.engine.ask(
            target.run_id, m.RequestCancellation(request_id=ulid(), reason=reason, cleanup_seconds=cleanup_seconds)
        )
        return CommandResult(target, run_id, answer)

    async def close(
        self, namespace: str, workflow_id: str, kind: str, reason: str | None, run_id: str | None, request_id: str | None = None
    ) -> CommandResult:
        target = await self._target(namespace, workflow_id, run_id, damaged_ok=True)  # the actor takes only terminate
        answer = await self.engine.ask(
            target.run_id, m.Close(kind=kind, reason=reason, command_id=ulid(), request_id=request_id)
        )
        return CommandResult(target, run_id, answer)

    async def _target(self, namespace: str, workflow_id: str, run_id: str | None, *, damaged_ok: bool = False) -> m.RunView:
        view = await self.current(namespace, workflow_id, damaged_ok=damaged_ok)
        if run_id is not None and run_id != view.run_id:
            raise ProtocolError(
                409,
                "historical_run_command_rejected",
                "Commands cannot target historical runs. Use the instance-level endpoint to command the current run, or omit the run ID.",
                workflow_id=workflow_id,
                run_id=run_id,
                target_scope="run",
            )
        return view
