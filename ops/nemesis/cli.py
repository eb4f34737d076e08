"""The command line: ``python -m ops.nemesis --duration 600 --seed 7``; exit status 1 on any
violation or harness error."""

from __future__ import annotations

import argparse
import random

from ops.nemesis.config import DEFAULT_DATABASE, NemesisConfig
from ops.nemesis.scenario import run


def parser() -> argparse.ArgumentParser:
    import ops.nemesis as package  # its docstring's first paragraph is the description

    p = argparse.ArgumentParser(prog="python -m ops.nemesis", description=(package.__doc__ or "").split("\n\n")[0])
    p.add_argument("--duration", type=float, default=600.0, help="load and fault phase, seconds (default 600)")
    p.add_argument("--seed", type=int, default=None, help="fault schedule and load seed (default: random, printed)")
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--rate", type=float, default=10.0, help="workflows started per second")
    p.add_argument("--database", default=None,
                   help="postgresql://… (default DW_DATABASE_URL or " + DEFAULT_DATABASE + "); a fresh schema is "
                        "created and dropped unless the URL names one with ?search_path=")
    p.add_argument("--quiet-seconds", type=float, default=120.0, help="fault-free phase after the load, at most")
    p.add_argument("--no-faults", action="store_true", help="the control run: same load, no faults")
    p.add_argument("--shards", type=int, default=16)
    p.add_argument("--log-dir", default=None, help="where node and harness logs go (default: a new temp dir)")
    return p


def main(argv: list[str] | None = None) -> int:
    cli = parser()
    args = cli.parse_args(argv)
    if args.nodes < 1 or args.rate <= 0 or args.duration <= 0:
        cli.error("--nodes, --rate and --duration must be positive")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1_000_000)
    cfg = NemesisConfig(
        duration=args.duration, seed=seed, nodes=args.nodes, rate=args.rate, database=args.database,
        quiet_seconds=args.quiet_seconds, faults=not args.no_faults, shard_count=args.shards, log_dir=args.log_dir,
    )
    result = run(cfg)
    return 0 if result.ok else 1
