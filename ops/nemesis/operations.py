"""Client calls as logical operations: bounded attempts, retried through the next node, with
every failure counted and the failover time of each operation measured."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from durable_workflow import Client

from ops.nemesis.report import Narrator

T = TypeVar("T")


def error_name(exc: BaseException) -> str:
    """A short, countable name for a failed call: the exception type, with the HTTP status when
    the server answered (a 500 is a server bug, a 503 a retryable refusal; both are ServerError)."""
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return "Timeout"
    status = getattr(exc, "status", None)
    return f"{type(exc).__name__}({status})" if isinstance(status, int) else type(exc).__name__


class NodeDown(Exception):
    """The fault's target is not running (it died on its own): the fault is skipped, and the
    death is already recorded as the violation it is."""


class GaveUp(Exception):
    """A logical operation did not succeed within its deadline through any node."""


@dataclass
class ClientStats:
    errors: Counter[str] = field(default_factory=Counter)  # per operation kind
    error_types: Counter[str] = field(default_factory=Counter)  # "kind:ExceptionType"
    gave_up: Counter[str] = field(default_factory=Counter)
    failovers: int = 0
    slowest_failover: float = 0.0
    slowest_failover_op: str = ""


class Operations:
    """Client calls as logical operations: each attempt is bounded, a failed attempt is counted
    and retried with backoff through the next node, and the time from the start of the first
    failed attempt to the success is the operation's failover time (a frozen node counts from
    the moment the call went to it, not from when the harness stopped waiting)."""

    def __init__(self, clients: list[Client], stats: ClientStats, narrator: Narrator, attempt_timeout: float,
                 deadline: float) -> None:
        self.clients = clients
        self.stats = stats
        self.narrator = narrator
        self.attempt_timeout = attempt_timeout
        self.deadline = deadline
        self._reported: set[str] = set()

    async def call(self, kind: str, label: str, node: int, fn: Callable[[Client], Awaitable[T]],
                   deadline: float | None = None) -> T:
        began = time.monotonic()
        limit = began + (self.deadline if deadline is None else deadline)
        first_failure: float | None = None
        backoff = 0.2
        while True:
            attempt_began = time.monotonic()
            try:
                result = await asyncio.wait_for(fn(self.clients[node]), self.attempt_timeout)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - every failure is counted and retried
                name = error_name(exc)
                key = f"{kind}:{name}"
                self.stats.errors[kind] += 1
                self.stats.error_types[key] += 1
                if key not in self._reported or name == "Timeout":  # the first of each kind; every timeout
                    # (a request that hung is what a failover must prevent: which node, and when, tells why)
                    self._reported.add(key)
                    self.narrator.say(f"client error ({kind} {label} via node {node + 1}): {name}: {str(exc)[:200]}")
                if first_failure is None:
                    first_failure = attempt_began
                if time.monotonic() + backoff > limit:
                    self.stats.gave_up[kind] += 1
                    raise GaveUp(f"{kind} {label}: {name}: {exc}") from exc
                await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
                backoff = min(backoff * 2, 2.0)
                node = (node + 1) % len(self.clients)
                continue
            if first_failure is not None:
                took = time.monotonic() - first_failure
                self.stats.failovers += 1
                if took > self.stats.slowest_failover:
                    self.stats.slowest_failover = took
                    self.stats.slowest_failover_op = f"{kind} {label}"
            return result

