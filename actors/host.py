"""What a run actor needs from the node that hosts it (the engine implements it)."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any, Protocol

from persistence.journal import Journal

from . import messages as m
from .clock import Clock
from .id_source import IdSource
from .limits import Limits
from .task_queue import Offer, TaskQueue
from .timer_service import TimerService

if TYPE_CHECKING:
    from .emit import Emitter
    from .run_actor import RunActor
    from .run_state import RunState


class Host(Protocol):
    journal: Journal
    clock: Clock
    timers: TimerService
    idle_seconds: float
    wt_lease: float
    act_lease: float
    limits: Limits
    ids: IdSource

    def queue(self, kind: str, namespace: str, name: str) -> TaskQueue: ...

    def publish_ready(self, run_id: str, tasks: dict[str, tuple[str, str, str, Offer]]) -> None: ...

    counters: Counter[str]

    def observe(self, records: list[Any], started_at: float | None) -> None: ...

    def post(self, run_id: str, message: m.Message) -> None: ...

    def forget(self, actor: RunActor) -> None: ...

    def fence(self, run_id: str) -> dict[int, int]: ...

    def drop_shards(self, shards: set[int]) -> None: ...

    def quarantine(self, run_id: str, seconds: float | None = None) -> None: ...

    def start_run(self, creator: str, run_id: str, message: m.StartRun) -> None: ...

    def apply_parent_close(self, parent: str, child: str, message: m.Message) -> None: ...

    def request_child_cancellation(self, parent: str, child: str, message: m.RequestCancellation) -> None: ...

    async def terminal_info(self, run_id: str) -> dict[str, Any] | None: ...


class ActorParts:
    """What the handler modules (``worker_handlers``, ``control_handlers``) use of the actor
    they are mixed into (``RunActor``), declared once for the type checker."""

    run_id: str
    host: Host
    state: RunState
    visible: int
    _requesting: set[str]  # children a cooperative request is on its way to (RunActor._request_children)

    if TYPE_CHECKING:
        async def commit(self, em: Emitter) -> None: ...

        def _after_change(self) -> None: ...

        def _launch(self, run_id: str) -> None: ...

        def start_message(self, run_id: str) -> m.StartRun | None: ...

        def _apply_parent_close(self) -> None: ...

        def _request_children(self) -> None: ...

        async def read_journal(self, run_id: str) -> list[Any]: ...

        async def _guard_wt(self, task_id: str, owner: Any, attempt: Any, now: float) -> None: ...
