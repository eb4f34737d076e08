"""The ``dw-server`` command line: ``serve`` and ``bootstrap``."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import signal
import socket
import sys
import time
from functools import partial

import trio
from hypercorn.config import Config as HyperConfig
from hypercorn.trio import serve as hyper_serve

from api.app import create_app
from api.auth import SUPPORTED_DRIVERS
from persistence.ids import MAX_SHARDS
from runtime import tracing
from runtime.config import Config, ConfigError
from runtime.errors import ConfigurationError
from runtime.membership import render_table
from runtime.node import Node, bootstrap, cluster_status, journal_loop

from . import hypercorn_patches
from . import log_format as log_format_module
from .task_dump import task_tree

log = logging.getLogger("dw.server")
# A request line and headers larger than this are refused (431) however the network splits them
# (ops.hypercorn_patches fix 7); 64 KiB holds a list filter at its 50-condition limit many times over.
MAX_REQUEST_HEAD_BYTES = 64 * 1024
MAX_PAYLOAD_DEPTH = 300  # the journal reads 400 levels; a record wraps a payload in a few more


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_config(cfg: Config) -> str | None:
    if not 1 <= cfg.shard_count <= MAX_SHARDS:
        return f"DW_SHARD_COUNT must be between 1 and {MAX_SHARDS}, not {cfg.shard_count}"
    if not 1 <= cfg.max_payload_depth <= MAX_PAYLOAD_DEPTH:
        return f"DW_MAX_PAYLOAD_DEPTH must be between 1 and {MAX_PAYLOAD_DEPTH}, not {cfg.max_payload_depth}"
    if cfg.auth_driver not in SUPPORTED_DRIVERS:
        return f"auth driver {cfg.auth_driver!r} is not supported; use one of {', '.join(SUPPORTED_DRIVERS)}"
    if cfg.auth_driver == "token" and not cfg.auth_tokens:
        return "auth driver 'token' needs DW_AUTH_TOKEN or a role token (DW_WORKER_TOKEN, DW_OPERATOR_TOKEN, DW_ADMIN_TOKEN)"
    if cfg.auth_driver == "signature" and not cfg.signature_keys:
        return (
            "auth driver 'signature' needs DW_SIGNATURE_KEY or a role key "
            "(DW_WORKER_SIGNATURE_KEY, DW_OPERATOR_SIGNATURE_KEY, DW_ADMIN_SIGNATURE_KEY)"
        )
    if cfg.signature_compat not in (None, "body-only"):
        return f"DW_SIGNATURE_COMPAT must be 'body-only' or unset, not {cfg.signature_compat!r}"
    if cfg.auth_driver == "none" and not _is_loopback(cfg.host) and not cfg.insecure:
        return (
            f"refusing to serve {cfg.host} without authentication; set DW_AUTH_DRIVER=token with a token, "
            "bind 127.0.0.1, or pass --insecure"
        )
    return None


async def serve(cfg: Config) -> None:
    provider = tracing.setup(cfg.node_id or "dw-server")
    try:
        async with journal_loop(cfg):
            await _serve(cfg)
    finally:
        if provider is not None:
            provider.shutdown()  # the spans still batched go out before the process ends
    if cfg.database:
        log.info("asyncio loop of the journal closed")


async def _serve(cfg: Config) -> None:
    hypercorn_patches.install()
    node = Node(cfg)
    async with trio.open_nursery() as root:
        await root.start(node.run)
        app = create_app(node)
        hcfg = HyperConfig()
        hcfg.bind = [f"{cfg.host}:{cfg.port}"]
        hcfg.keep_alive_timeout = cfg.keep_alive_seconds
        hcfg.h11_max_incomplete_size = MAX_REQUEST_HEAD_BYTES
        hcfg.graceful_timeout = 2  # parked polls are answered first; this only bounds idle keep-alives
        hcfg.accesslog = None
        hcfg.include_server_header = False
        hcfg.errorlog = logging.getLogger("hypercorn.error")
        stop = trio.Event()
        stopping = time.monotonic()
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as http:
                binds = await http.start(partial(hyper_serve, app, hcfg, shutdown_trigger=stop.wait))
                log.info(
                    "dw-server listening on %s (store %s, auth driver %s)",
                    ", ".join(binds), node.store_description, cfg.auth_driver,
                )
                if cfg.auth_driver == "signature" and cfg.signature_compat == "body-only":
                    log.warning(
                        "DW_SIGNATURE_COMPAT=body-only: a signature covers only the body, never expires and is never "
                        "checked for replays; the signature of an empty body authenticates every request without "
                        "one (any GET, and a bodyless POST such as a cancel) on any route. Use it only until your "
                        "clients sign the default scheme."
                    )
                async for signum in signals:
                    log.info("received %s: answering parked polls and shutting down", signal.Signals(signum).name)
                    break
                stopping = time.monotonic()
                root.start_soon(_report_slow_shutdown, SLOW_SHUTDOWN_SECONDS)
                node.engine.drain()
                stop.set()
            log.info("HTTP server stopped %.1fs after the signal", time.monotonic() - stopping)
        root.cancel_scope.cancel()
    log.info("dw-server stopped (shutdown took %.1fs)", time.monotonic() - stopping)


SLOW_SHUTDOWN_SECONDS = 8.0  # a stop taking longer than this is logged with what every task waits on


async def _report_slow_shutdown(after: float) -> None:
    await trio.sleep(after)
    log.warning("shutdown still running after %.0fs; tasks and what they wait on:\n%s", after, "\n".join(task_tree()))


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]


def build_parser() -> argparse.ArgumentParser:
    """The command line's grammar (the container files' commands are checked against it)."""
    parser = argparse.ArgumentParser(prog="dw-server", description="Durable workflow server")
    sub = parser.add_subparsers(dest="command", required=True)
    status = sub.add_parser("cluster", help="cluster operations")
    status.add_argument("action", choices=["status"])
    status.add_argument("--database", default=None, help="postgresql://… of the cluster (or DW_DATABASE_URL)")
    status.add_argument("--data-dir", default="./.dw-data")
    status.add_argument("--log-level", default="WARNING")
    for name in ("serve", "bootstrap"):
        p = sub.add_parser(name)
        p.add_argument("--data-dir", default="./.dw-data", help="directory of the embedded SQLite journal")
        p.add_argument("--database", default=None, help="postgresql://user@host:port/db (default: the embedded SQLite)")
        p.add_argument("--log-level", default="INFO")
        p.add_argument("--log-format", choices=["text", "json"], default=None,
                       help="text lines (the default) or one JSON object per line (or DW_LOG_FORMAT)")
        if name == "serve":
            p.add_argument("--host", default="127.0.0.1")
            p.add_argument("--port", type=int, default=8080)
            p.add_argument("--insecure", action="store_true", help="allow auth driver 'none' on a non-loopback bind")
            p.add_argument("--node-id", default=None, help="this node's id in a cluster (default: host name and pid)")
            p.add_argument("--advertise-url", default=None, help="the URL other nodes reach this node at")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log_format = getattr(args, "log_format", None) or os.environ.get("DW_LOG_FORMAT") or "text"
    if log_format not in ("text", "json"):
        print(f"error: DW_LOG_FORMAT must be text or json, not {log_format!r}", file=sys.stderr)
        return 2
    node_name = getattr(args, "node_id", None) or os.environ.get("DW_NODE_ID") or socket.gethostname()
    log_format_module.configure(args.log_level, log_format, node_name)
    overrides: dict[str, object] = {"data_dir": args.data_dir, "database": args.database}
    if args.command == "serve":
        overrides.update(
            host=args.host, port=args.port, insecure=args.insecure, node_id=args.node_id, advertise_url=args.advertise_url
        )
    try:
        cfg = Config.from_env(**overrides)
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    log_format_module.set_node(cfg.node_id or node_name)
    if args.command == "bootstrap":
        for line in trio.run(bootstrap, cfg):
            log.info("%s", line)
        return 0
    if args.command == "cluster":
        print(render_table(trio.run(cluster_status, cfg)))
        return 0
    problem = _check_config(cfg)
    if problem:
        log.error("%s", problem)
        return 2
    refused = False
    try:
        try:
            trio.run(serve, cfg)
        except* ConfigurationError as group:
            for exc in _leaves(group):
                log.error("%s", exc)
            refused = True
    except KeyboardInterrupt:
        pass
    return 2 if refused else 0


if __name__ == "__main__":
    sys.exit(main())
