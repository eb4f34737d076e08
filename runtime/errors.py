"""Protocol errors raised below the HTTP layer and rendered by it into the envelope."""

from __future__ import annotations

from typing import Any


class ProtocolError(Exception):
    def __init__(self, status: int, reason: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"message": self.message, "reason": self.reason, **self.extra}


def validation(field: str, message: str) -> ProtocolError:
    return ProtocolError(422, "validation_failed", message, errors={field: [message]}, validation_errors={field: [message]})


class ConfigurationError(Exception):
    """The node cannot run with this configuration; the message tells the operator what to change."""


class ForwardTo(Exception):
    """The request belongs to the owner of ``shard``: send it there."""

    def __init__(self, shard: int) -> None:
        super().__init__(f"shard {shard}")
        self.shard = shard
