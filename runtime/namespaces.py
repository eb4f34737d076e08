"""Namespaces: an in-memory directory backed by the journal's namespaces table."""

from __future__ import annotations

from typing import Any

from persistence.ids import iso
from persistence.journal import Batch, NamespaceRow
from persistence.vocabulary import OPEN_STATUSES

from .engine import Engine
from .errors import ProtocolError


class NamespaceService:
    def __init__(self, engine: Engine, default: str = "default", retention_days: int = 30) -> None:
        self.engine = engine
        self.default = default
        self.retention_days = retention_days
        self.rows: dict[str, NamespaceRow] = {}
        self.storage_policy: Any = lambda name: None  # namespace -> its external payload storage policy (set by the node)

    async def load(self) -> None:
        self.rows = {row.name: row for row in await self.engine.journal.list_namespaces()}

    async def ensure_default(self) -> bool:
        if self.default in self.rows:
            return False
        await self.create({"name": self.default, "description": "Default namespace", "retention_days": 30})
        return True

    def exists(self, name: str) -> bool:
        return name in self.rows

    def view(self, row: NamespaceRow) -> dict[str, Any]:
        return {
            "name": row.name,
            "description": row.description,
            "retention_days": row.retention_days,
            "status": row.status,
            "external_payload_storage": self.storage_policy(row.name),
            "created_at": iso(row.created_at),
            "updated_at": iso(row.updated_at),
        }

    def get(self, name: str) -> NamespaceRow:
        row = self.rows.get(name.lower())
        if row is None:
            raise ProtocolError(404, "namespace_not_found", f"Namespace [{name}] not found.", namespace=name)
        return row

    async def create(self, body: dict[str, Any]) -> NamespaceRow:
        name = body["name"].lower()
        if name in self.rows:
            raise ProtocolError(409, "namespace_already_exists", "Namespace already exists.", namespace=name)
        now = self.engine.clock.now()
        retention = body.get("retention_days") or self.retention_days
        row = NamespaceRow(name, body.get("description"), retention, "active", now, now)
        await self.engine.journal.append(Batch(namespaces=[row]))
        self.rows[name] = row
        return row

    async def update(self, name: str, body: dict[str, Any]) -> NamespaceRow:
        row = self.get(name)
        updated = NamespaceRow(
            row.name,
            body["description"] if body.get("description") is not None else row.description,
            body["retention_days"] if body.get("retention_days") is not None else row.retention_days,
            row.status,
            row.created_at,
            self.engine.clock.now(),
        )
        await self.engine.journal.append(Batch(namespaces=[updated]))
        self.rows[row.name] = updated
        return updated

    async def delete(self, name: str) -> dict[str, Any]:
        """Delete a namespace and everything in it, once nothing in it is running.

        The default namespace cannot be deleted (requests without a namespace land there).
        Open runs must be closed first: deleting them would silently drop work in flight.
        """
        row = self.get(name)
        if row.name == self.default:
            raise ProtocolError(
                409, "namespace_protected", f"The default namespace [{row.name}] cannot be deleted.", namespace=row.name
            )
        open_runs = await self.engine.journal.list_runs(
            row.name, statuses=list(OPEN_STATUSES), limit=1
        )
        if open_runs:
            raise ProtocolError(
                409, "namespace_not_empty",
                f"Namespace [{row.name}] still has running workflows; cancel or terminate them before deleting it.",
                namespace=row.name,
            )
        deleted = await self.engine.journal.delete_namespace(row.name)
        self.rows.pop(row.name, None)
        self.engine.stop_namespace(row.name)
        return {"name": row.name, "status": "deleted", "deleted": deleted}
