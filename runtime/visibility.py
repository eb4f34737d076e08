"""The list-workflows filter language: ``Attr = "value" AND Other >= 2``.

Pure parsing and type checking, so every error a user can make is tested without a server.
A query becomes a list of ``Predicate``s the journal turns into SQL. System attributes map to
columns of the run projection; custom ones must be registered in the namespace with a type
(control-plane §7), and each value must fit that type. A query without an operator keeps the
reference's meaning: free text matched against workflow id and business key.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from persistence.journal import Predicate
from persistence.vocabulary import OPEN_STATUSES, STATUS_BUCKETS, TERMINAL_STATUSES

from .errors import ProtocolError

TYPES = ("keyword", "text", "int", "double", "bool", "datetime", "keyword_list")
SYSTEM = {
    "WorkflowType": ("keyword", "workflow_type"),
    "WorkflowId": ("keyword", "workflow_id"),
    "RunId": ("keyword", "run_id"),
    "Status": ("keyword", "status"),
    "TaskQueue": ("keyword", "task_queue"),
    "BuildId": ("keyword", None),
    "StartTime": ("datetime", "started_at"),
    "CloseTime": ("datetime", "closed_at"),
}
ORDERED_TYPES = ("int", "double", "datetime")
MAX_CONDITIONS = 50  # each is a SQL expression; SQLite refuses an expression tree 1,000 deep
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
RAW_STATUSES = frozenset(OPEN_STATUSES + TERMINAL_STATUSES)

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
      | (?P<op>!=|>=|<=|=|>|<)
      | (?P<number>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)(?![A-Za-z_])
      | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
    )""",
    re.VERBOSE,
)


@dataclass(frozen=True)
class _Tok:
    kind: str
    text: str
    pos: int


def invalid(message: str, **extra: Any) -> ProtocolError:
    errors = {"query": [message]}
    return ProtocolError(422, "invalid_query", message, errors=errors, validation_errors=errors, **extra)


def is_filter(query: str) -> bool:
    """Does this look like the predicate language rather than free text?"""
    return bool(re.search(r"(!=|>=|<=|=|>|<)", query))


def _tokens(query: str) -> list[_Tok]:
    out: list[_Tok] = []
    pos = 0
    while pos < len(query):
        if query[pos:].strip() == "":
            break
        m = _TOKEN.match(query, pos)
        if m is None:
            raise invalid(f"The query cannot be read at position {pos + 1}: {query[pos:pos + 20]!r}.")
        kind = m.lastgroup or "word"
        out.append(_Tok(kind, m.group(kind), m.start(kind)))
        pos = m.end()
    return out


def _literal(tok: _Tok) -> Any:
    if tok.kind == "string":
        body = tok.text[1:-1]
        return re.sub(r"\\(.)", r"\1", body)
    if tok.kind == "number":
        if any(c in tok.text for c in ".eE"):
            value = float(tok.text)
            if not math.isfinite(value):
                raise invalid(f"The number {tok.text[:40]} at position {tok.pos + 1} is too large; numbers must be finite.")
            return value
        if len(tok.text.lstrip("-")) > 19 or not INT64_MIN <= int(tok.text) <= INT64_MAX:
            raise invalid(f"The integer {tok.text[:40]} at position {tok.pos + 1} does not fit in 64 bits.")
        return int(tok.text)
    if tok.kind == "word" and tok.text.lower() in ("true", "false"):
        return tok.text.lower() == "true"
    raise invalid(f"Expected a value (a quoted string, a number, true or false) at position {tok.pos + 1}, found {tok.text!r}.")


def parse(query: str, custom: dict[str, str]) -> list[Predicate]:
    """``custom`` maps registered attribute names to their types."""
    toks = _tokens(query)
    preds: list[Predicate] = []
    i = 0
    early = invalid("The query ends early: each condition is `Attribute <operator> value`, joined with AND.")
    while True:
        if i >= len(toks):
            raise early
        name = toks[i]
        if name.kind != "word":
            raise invalid(f"Expected an attribute name at position {name.pos + 1}, found {name.text!r}.")
        if i + 1 >= len(toks):
            raise early
        op = toks[i + 1]
        if op.kind != "op":
            raise invalid(f"Expected an operator (=, !=, >, >=, <, <=) after {name.text!r}, found {op.text!r}.")
        if i + 2 >= len(toks):
            raise early
        preds.append(_predicate(name.text, op.text, _literal(toks[i + 2]), custom))
        if len(preds) > MAX_CONDITIONS:
            raise invalid(f"A query may join at most {MAX_CONDITIONS} conditions with AND.", limit=MAX_CONDITIONS)
        i += 3
        if i == len(toks):
            return preds
        if toks[i].kind != "word" or toks[i].text.upper() != "AND":
            raise invalid(f"Conditions are joined with AND; found {toks[i].text!r} at position {toks[i].pos + 1}.")
        i += 1


def _predicate(name: str, op: str, value: Any, custom: dict[str, str]) -> Predicate:
    if name in SYSTEM:
        kind, column = SYSTEM[name]
        if column is None:
            raise invalid(f"The system attribute {name} cannot be filtered on by this server.", attribute=name)
    elif name in custom:
        kind, column = custom[name], None
    else:
        known = sorted(custom)
        raise invalid(
            f"Unknown search attribute {name!r}. Register it with POST /api/search-attributes"
            + (f" (registered: {', '.join(known)})." if known else "."),
            reason_detail="unknown_search_attribute", attribute=name,
        )
    if op in (">", ">=", "<", "<=") and kind not in ORDERED_TYPES:
        raise invalid(f"The operator {op} needs an int, double or datetime attribute; {name} is {kind}.", attribute=name)
    value = _typed(name, kind, value)
    if name == "Status":
        if value in STATUS_BUCKETS and op in ("=", "!="):
            return Predicate(column="status", op="in" if op == "=" else "not_in", value=list(STATUS_BUCKETS[value]))
        if value not in RAW_STATUSES:
            raise invalid(f"Unknown status {value!r}; use running, completed or failed (or a raw status).", attribute=name)
    return Predicate(column=column, attribute=None if column else name, op=op, value=value, type=kind)


def _typed(name: str, kind: str, value: Any) -> Any:
    wrong = invalid(f"The value {value!r} does not fit {name}, which is {kind}.", attribute=name, attribute_type=kind)
    if kind in ("keyword", "text", "keyword_list"):
        if not isinstance(value, str):
            raise wrong
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong
        return value
    if kind == "double":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise wrong
        return float(value)
    if kind == "bool":
        if not isinstance(value, bool):
            raise wrong
        return value
    if kind == "datetime":
        if not isinstance(value, str):
            raise wrong
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise wrong from None
        if parsed.tzinfo is None:
            raise invalid(f"The time {value!r} for {name} needs a time zone (e.g. 2026-01-01T00:00:00Z).", attribute=name)
        return parsed.timestamp() if name in SYSTEM else value
    raise wrong
