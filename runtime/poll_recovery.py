"""Finding what a re-sent poll was already given, anywhere in the cluster.

A poll forwarded to its task queue's home can be answered by a claim that commits on the
run's owner while the home dies before the answer gets back. The forwarding node then sends
the same poll (same ``poll_request_id``) to the new home, which remembers nothing of it. The
lease, though, names the poll it was given to (``poll_id`` on the task, journaled with the
claim), so the new home asks every member whether one of its live runs holds a lease for
that worker and poll, and if so hands the same task out again — instead of the worker
waiting out a lease nobody delivered.
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from actors import messages as m
from actors.run_actor import NotOwner, RunNotFound, RunUnavailable

from .peers import PeerError
from .router import PEER_TIMEOUT

log = logging.getLogger("dw.workers")


def _leases(engine: Any, kind: str, namespace: str, worker: str, poll_id: str) -> list[tuple[str, m.TaskView]]:
    found = []
    for view in engine.work_views():
        if view.namespace != namespace:
            continue
        tasks = (view.workflow_task,) if kind == "workflow" else view.activities
        for task in tasks:
            if task is not None and task.poll_id == poll_id and task.lease_owner == worker:
                found.append((view.run_id, task))
    return found


async def replay_here(engine: Any, kind: str, namespace: str, worker: str, poll_id: str, page_size: int) -> dict[str, Any] | None:
    """The task a live run on this node leased to ``worker``'s poll ``poll_id``, again; None if none."""
    for run_id, task in _leases(engine, kind, namespace, worker, poll_id):
        assert task.attempt is not None
        message: m.Message
        if kind == "workflow":
            message = m.ReplayWorkflowTask(task_id=task.task_id, owner=worker, attempt=task.attempt, page_size=page_size)
        else:
            message = m.ReplayActivity(task_id=task.task_id, owner=worker, attempt=task.attempt)
        try:
            answer = await engine.ask(run_id, message)
        except (NotOwner, RunNotFound, RunUnavailable):
            continue
        if answer is not None:
            return answer  # type: ignore[no-any-return]
    return None


async def replay_anywhere(engine: Any, kind: str, namespace: str, worker: str, poll_id: str, page_size: int) -> dict[str, Any] | None:
    """``replay_here`` on this node and, at once, on every member that answers."""
    task = await replay_here(engine, kind, namespace, worker, poll_id, page_size)
    peers = engine.peers
    if task is not None or peers is None:
        return task
    urls = [url for node, url in peers.urls.items() if node != peers.node_id and peers.reachable(url)]
    found: list[dict[str, Any]] = []

    async def ask(url: str) -> None:
        try:
            with trio.fail_after(PEER_TIMEOUT):
                reply = await peers.call(url, "poll_replay", kind=kind, namespace=namespace, worker=worker, poll_id=poll_id, page_size=page_size)
        except (PeerError, trio.TooSlowError) as exc:
            log.info("poll_replay to %s failed (%s)", url, exc)
            return
        if isinstance(reply, dict) and reply.get("task") is not None:
            found.append(reply["task"])

    async with trio.open_nursery() as nursery:
        for url in urls:
            nursery.start_soon(ask, url)
    if found:
        log.info("re-sent %s poll %s of worker %s answered with the task it was already given", kind, poll_id, worker)
        return found[0]
    return None
