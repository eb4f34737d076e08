"""ops.task_dump: the task tree a slow shutdown is logged with names each task and its awaits."""

from __future__ import annotations

import trio
import trio.testing

from ops.task_dump import task_tree


async def parked_in_a_named_place(event: trio.Event) -> None:
    await event.wait()


async def test_every_task_is_listed_with_the_function_it_waits_in() -> None:
    event = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(parked_in_a_named_place, event, name="the-parked-one")
        await trio.testing.wait_all_tasks_blocked()
        lines = task_tree()
        event.set()
    [line] = [line for line in lines if "the-parked-one" in line]
    assert "parked_in_a_named_place (unit/test_task_dump.py:" in line and "wait" in line
    assert line.startswith("  "), "a child task is indented under its parent"
