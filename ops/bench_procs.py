"""What every benchmark needs around the load: a server of a given build on a fresh store, and
the CPU and memory its processes used, read from /proc (not timed by the benchmark itself).

A *build* is a checkout directory: the server runs from it (``PYTHONPATH`` and working directory
set to it) with this interpreter, so two commits can be measured back to back in one run
(``git worktree add /tmp/before <commit>``; ``--compare /tmp/before``).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = str(Path(__file__).resolve().parent.parent)


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (the peers' harness uses the same)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of one process so far, threads that have ended included (which a sum
    over /proc/<pid>/task/*/schedstat would lose). Counted in 10 ms ticks: benchmarks measure
    slices long enough (hundreds of ms) for that to stay within a few percent."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """CPU of a process and its live children (the server's lease-session child, for one)."""
    total = cpu_seconds(pid)
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    for child in children:
        try:
            total += tree_cpu_seconds(int(child))
        except OSError:
            continue
    return total


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


LOG = os.path.join(tempfile.gettempdir(), "dw-bench-server.log")


@dataclass
class Server:
    """One dw-server process of one build, on a fresh SQLite data dir (or a PostgreSQL URL)."""

    build: str = HERE
    database: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[str] | None = None
    url: str = ""
    data_dir: str = ""

    def start(self) -> str:
        self.data_dir = tempfile.mkdtemp(prefix="dw-bench-")
        extra = ["--database", self.database] if self.database else []
        env = {**os.environ, "PYTHONPATH": self.build, **self.env}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ops.cli", "serve", "--port", "0", "--data-dir", self.data_dir, *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=self.build,
        )
        assert self.proc.stdout is not None
        lines = []
        for line in self.proc.stdout:
            lines.append(line)
            m = re.search(r"listening on (http://\S+)", line)
            if m:
                threading.Thread(target=self._keep_log, args=(lines,), daemon=True).start()
                self.url = m.group(1)
                return self.url
        raise RuntimeError("dw-server did not start:\n" + "".join(lines[-30:]))

    def _keep_log(self, head: list[str]) -> None:
        """The server's output goes to LOG (the last server's), for a run that went wrong."""
        assert self.proc is not None and self.proc.stdout is not None
        with open(LOG, "w") as out:
            out.writelines(head)
            for line in self.proc.stdout:
                out.write(line)
                out.flush()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def cpu(self) -> float:
        return tree_cpu_seconds(self.pid)

    def store_state(self) -> tuple[int, float] | None:
        """Total size and newest modification of the SQLite journal's files; None on PostgreSQL.
        Unchanged over a window means nothing was written to the journal in it."""
        if self.database:
            return None
        files = [f for f in Path(self.data_dir).rglob("*") if f.is_file()]
        return sum(f.stat().st_size for f in files), max((f.stat().st_mtime for f in files), default=0.0)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()



def with_worker_process(target: Any, url: str, task_queue: str, drive: Any) -> Any:
    """Run ``drive()`` while one spawned SDK worker process (``target(url, task_queue, ready,
    stop)``) serves ``task_queue``; the worker is stopped whatever happens."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    ready, stop = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=target, args=(url, task_queue, ready, stop))
    proc.start()
    ready.wait(30)
    try:
        return drive()
    finally:
        stop.set()
        proc.join(60)


def serve_worker(url: str, ready: Any, stop: Any, token: str | None = None, **worker_options: Any) -> None:
    """The body of a benchmark's SDK worker process: one ``Worker`` until ``stop`` is set."""
    from durable_workflow import Client, Worker

    async def main() -> None:
        async with Client(url, token=token) as client:
            worker = Worker(client, **worker_options)
            task = asyncio.create_task(worker.run())
            ready.set()
            while not stop.is_set():
                await asyncio.sleep(0.1)
            await worker.stop()
            await task

    asyncio.run(main())
