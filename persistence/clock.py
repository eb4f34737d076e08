"""The ``Clock`` seam: what every timer, lease and timeout reads time through.

It is defined here, in the lowest layer that reads the time (shard leases stamp their
claims with it), so that persistence needs no import from above; ``actors.clock``
re-exports it beside the trio-driven clock the tests use.
"""

from __future__ import annotations

import time
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """Epoch seconds, injectable: production reads wall time, tests a clock they drive."""

    def now(self) -> float: ...


class SystemClock:
    """Wall time (``time.time``)."""

    def now(self) -> float:
        return time.time()
