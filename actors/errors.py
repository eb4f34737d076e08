"""The one error a client can cause, at any layer: a status, a stable reason, a message that
says what to fix, and extra fields for the envelope. The API renders every subclass the same
way (``body()``), so a new kind of refusal needs no new mapping there."""

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


class GuardError(ProtocolError):
    """A worker's call about a task it no longer holds (stale attempt, expired lease, closed run).
    ``release``: the lease had expired, so the actor releases the task before refusing."""

    def __init__(self, status: int, reason: str, message: str, release: bool = False, **extra: Any) -> None:
        super().__init__(status, reason, message, **extra)
        self.release = release


class CommandError(ProtocolError):
    """A workflow-task completion whose commands cannot be applied; ``errors`` names the fields."""

    def __init__(
        self, status: int, reason: str, message: str, errors: dict[str, list[str]] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(status, reason, message, **(extra or {}))
        self.errors = errors or {}

    def body(self) -> dict[str, Any]:
        out = super().body()
        if self.errors:
            out["errors"] = out["validation_errors"] = self.errors
        return out


def invalid(field: str, message: str) -> CommandError:
    """422 ``validation_failed`` naming the one field at fault (every validator of a command,
    a descriptor or a delivery answers so)."""
    return CommandError(422, "validation_failed", message, {field: [message]})
