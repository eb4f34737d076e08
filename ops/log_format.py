"""Log output: the classic text lines, or one JSON object per line for log pipelines.

A JSON line carries ``ts`` (UTC, ISO 8601), ``level``, ``logger``, ``message``, ``node``, and,
where they apply, ``request_id``, ``namespace``, ``workflow_id`` and ``run_id`` (from
``actors.log_context``), plus ``exception`` with the traceback text when one was logged. The
stdlib formatter keeps third-party loggers (hypercorn, asyncpg) in the same stream unchanged.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from actors import log_context

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    def __init__(self, node: str) -> None:
        super().__init__()
        self.node = node

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "node": self.node,
            **log_context.current(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def configure(level: str, fmt: str, node: str) -> None:
    """``fmt``: ``text`` or ``json``. Output goes to stdout, one line per record."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(node) if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per node-to-node call would drown the log


def set_node(node: str) -> None:
    """The node id once the configuration is read (it may come from the environment)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler.formatter, JsonFormatter):
            handler.formatter.node = node
