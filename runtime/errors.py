"""Protocol errors raised below the HTTP layer and rendered by it into the envelope."""

from __future__ import annotations

from actors.errors import ProtocolError

__all__ = ["ConfigurationError", "ForwardTo", "ProtocolError", "validation"]


def validation(field: str, message: str) -> ProtocolError:
    return ProtocolError(422, "validation_failed", message, errors={field: [message]}, validation_errors={field: [message]})


class ConfigurationError(Exception):
    """The node cannot run with this configuration; the message tells the operator what to change."""


class ForwardTo(Exception):
    """The request belongs to the owner of ``shard``: send it there."""

    def __init__(self, shard: int) -> None:
        super().__init__(f"shard {shard}")
        self.shard = shard
