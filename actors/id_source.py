"""Where decisions get the ids they mint (a child's workflow and run id, a continued run's id).

A decision is a pure function of the state, the commands, the time and this source: the node
uses random ids, a test or a replay passes a seeded source and gets the same records twice.
"""

from __future__ import annotations

import random
from typing import Protocol

from persistence import ids


class IdSource(Protocol):
    def ulid(self, now: float) -> str: ...

    def run_ulid(self, shard: int, now: float) -> str: ...


class RandomIds:
    def ulid(self, now: float) -> str:
        return ids.ulid(now)

    def run_ulid(self, shard: int, now: float) -> str:
        return ids.run_ulid(shard, now)


class SeededIds:
    """The same seed gives the same sequence of ids (for tests and replays)."""

    def __init__(self, seed: int) -> None:
        self._random = random.Random(seed)

    def ulid(self, now: float) -> str:
        return ids.ulid(now, self._random.randbytes(10))

    def run_ulid(self, shard: int, now: float) -> str:
        return ids.run_ulid(shard, now, self._random.randbytes(10))


RANDOM_IDS = RandomIds()
