"""What every trio task of this process is waiting on: for an operator whose server does not
stop (or hangs) and for the log of a test that caught it doing so."""

from __future__ import annotations

from typing import Any

import trio


def _frames(coro: Any) -> list[str]:
    out = []
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            out.append(f"{frame.f_code.co_name} ({'/'.join(frame.f_code.co_filename.rsplit('/', 2)[-2:])}:{frame.f_lineno})")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return out


def task_tree(limit: int = 200) -> list[str]:
    """One line per live task, indented by nursery depth, with its innermost awaits."""
    lines: list[str] = []

    def walk(task: trio.lowlevel.Task, depth: int) -> None:
        if len(lines) >= limit:
            return
        frames = _frames(task.coro)
        lines.append("  " * depth + f"{task.name}: " + " > ".join(frames[-4:]))
        for nursery in task.child_nurseries:
            for child in nursery.child_tasks:
                walk(child, depth + 1)

    walk(trio.lowlevel.current_root_task(), 0)
    return lines
