"""Custom search-attribute definitions per namespace (control-plane §7).

Definitions are small named objects in the journal (``ObjectRow`` kind ``search_attribute``);
a deleted one keeps its row marked deleted. Every node caches them and re-reads the journal
when a name it does not know shows up, so a definition registered through another node of
the cluster is found without a broadcast.
"""

from __future__ import annotations

import re
from typing import Any

from persistence.journal import Batch, ObjectRow

from .engine import Engine
from .errors import ProtocolError, validation
from .visibility import SYSTEM, TYPES

KIND = "search_attribute"
NAME = re.compile(r"^[a-zA-Z][a-zA-Z0-9_]*$")


class SearchAttributeService:
    def __init__(self, engine: Engine, limit: int = 100) -> None:
        self.engine = engine
        self.limit = limit
        self.defs: dict[str, dict[str, str]] = {}  # namespace -> name -> type

    async def load(self) -> None:
        defs: dict[str, dict[str, str]] = {}
        for row in await self.engine.journal.list_objects(KIND):
            if not row.body.get("deleted"):
                defs.setdefault(row.namespace, {})[row.name] = row.body["type"]
        self.defs = defs

    async def types(self, namespace: str, wanted: set[str] | None = None) -> dict[str, str]:
        """The namespace's custom attributes; re-read once if ``wanted`` names are unknown here."""
        known = self.defs.get(namespace, {})
        if wanted and not wanted <= set(known) | set(SYSTEM):
            await self.load()
            known = self.defs.get(namespace, {})
        return dict(known)

    def view(self, namespace: str) -> dict[str, Any]:
        custom = self.defs.get(namespace, {})
        return {
            "system_attributes": {name: kind for name, (kind, _) in SYSTEM.items()},
            "custom_attributes": {name: custom[name] for name in sorted(custom)},
        }

    async def create(self, namespace: str, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise validation("body", "The request body must be a JSON object with name and type.")
        name, kind = body.get("name"), body.get("type")
        if not isinstance(name, str) or not name or len(name) > 128 or not NAME.match(name):
            raise validation("name", "The name must be 1-128 characters: a letter, then letters, digits or underscores.")
        if kind not in TYPES:
            raise validation("type", f"The type must be one of {', '.join(TYPES)}.")
        if name in SYSTEM:
            raise ProtocolError(409, "name_reserved", f"[{name}] is a system attribute name and cannot be registered.", name=name)
        await self.load()
        custom = self.defs.get(namespace, {})
        if name in custom:
            raise ProtocolError(
                409, "attribute_already_exists", f"Search attribute [{name}] already exists as {custom[name]}.",
                name=name, type=custom[name],
            )
        if len(custom) >= self.limit:
            raise ProtocolError(
                422, "search_attribute_limit_reached",
                f"Namespace [{namespace}] already has {len(custom)} custom search attributes, the limit.", limit=self.limit,
            )
        now = self.engine.clock.now()
        await self.engine.journal.append(Batch(objects=[ObjectRow(namespace, KIND, name, {"type": kind, "created_at": now}, now)]))
        self.defs.setdefault(namespace, {})[name] = kind
        return {"name": name, "type": kind, "outcome": "created"}

    async def delete(self, namespace: str, name: str) -> dict[str, Any]:
        if name in SYSTEM:
            raise ProtocolError(409, "system_attribute", f"[{name}] is a system attribute and cannot be deleted.", name=name)
        await self.load()
        custom = self.defs.get(namespace, {})
        if name not in custom:
            raise ProtocolError(404, "attribute_not_found", f"Search attribute [{name}] is not registered in [{namespace}].", name=name)
        now = self.engine.clock.now()
        body = {"type": custom[name], "deleted": True, "deleted_at": now}
        await self.engine.journal.append(Batch(objects=[ObjectRow(namespace, KIND, name, body, now)]))
        del custom[name]
        return {"name": name, "outcome": "deleted"}
