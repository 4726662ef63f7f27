"""``dars-train live``: export the live store, retrain-gate-promote, watch for rollbacks.

- ``export --store URL --out obs.jsonl.gz``: observations in the trainer's format.
- ``retrain --store URL --serving FILE --state-dir DIR [--url --admin-token] [--every S]``:
  one turn (watch, then retrain-gate-promote), or one turn every ``S`` seconds; the gate is
  APGR for two models (``--margin`` points), AIQ for K (``--aiq-margin``), both with a
  paired bootstrap bound (``--confidence``, ``--resamples``).
- ``watch``: only the rollback check of the last promotion.

The admin token is read from ``DARS_ADMIN_TOKEN`` when ``--admin-token`` is not given, so it
need not appear in a process list or a crontab.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from router_models.cli import _key_values
from router_models.live.export import ExportStats, store_observations
from router_models.live.retrain import LoopConfig, retrain_once, watch_once
from router_models.live.store import open_store
from router_models.observations import write_observations
from router_models.pipeline import say
from router_models.promotion import GatePolicy, RollbackPolicy

__all__ = ["register"]


def _cmd_export(args: argparse.Namespace) -> int:
    store = open_store(args.store)
    stats = ExportStats()
    try:
        rows = store_observations(store, dataset=args.dataset, stats=stats)
    finally:
        store.close()
    write_observations(args.out, rows)
    say(f"{stats.summary()} -> {args.out}")
    return 0


def _config(args: argparse.Namespace) -> LoopConfig:
    if args.store is None and not args.data:
        raise ValueError("give --store URL and/or --data FILE (a `live export`)")
    return LoopConfig(
        state_dir=Path(args.state_dir),
        store=args.store,
        data=args.data or (),
        pretrained=getattr(args, "pretrained", None) or (),
        serving=Path(args.serving) if args.serving else None,
        weak=args.weak,
        strong=args.strong,
        router=getattr(args, "router", "knn"),
        quality_router=getattr(args, "quality_router", "knn_quality"),
        params=_key_values(getattr(args, "param", None)),
        holdout=getattr(args, "holdout", 0.25),
        seed=getattr(args, "seed", 0),
        gate=GatePolicy(
            margin=args.margin,
            min_queries=args.min_queries,
            aiq_margin=args.aiq_margin,
            confidence=args.confidence,
            n_resamples=args.resamples,
            seed=getattr(args, "seed", 0),
        ),
        rollback=RollbackPolicy(max_drop=args.max_drop, min_count=args.min_count, z=args.z),
        cloud_share=getattr(args, "cloud_share", None),
        url=args.url,
        admin_token=args.admin_token or os.environ.get("DARS_ADMIN_TOKEN") or None,
    )


def _turn(config: LoopConfig, *, retrain: bool) -> dict[str, Any]:
    decision = watch_once(config)
    if decision["event"] in ("rollback", "rollback-failed") or not retrain:
        return decision  # never promote in the turn that rolled back
    return retrain_once(config)


def _cmd_retrain(args: argparse.Namespace) -> int:
    config = _config(args)
    while True:
        _turn(config, retrain=True)
        if args.every is None:
            return 0
        time.sleep(args.every)


def _cmd_watch(args: argparse.Namespace) -> int:
    _turn(_config(args), retrain=False)
    return 0


def _loop_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", help="live store: sqlite:///live.db or redis://host:6379/0")
    p.add_argument("--data", action="append", metavar="PATH", help="exported live observations")
    p.add_argument("--state-dir", required=True, help="state.json, decisions.jsonl, routers/")
    p.add_argument("--serving", help="router file the service loaded (first run only)")
    p.add_argument("--weak", help="edge model name (default: from the live records)")
    p.add_argument("--strong", help="cloud model name (default: from the live records)")
    p.add_argument("--url", help="service base URL for the hot reload (unset: log only)")
    p.add_argument("--admin-token", help="admin token (default: $DARS_ADMIN_TOKEN)")
    p.add_argument("--margin", type=float, default=1.0, help="APGR points to beat serving by")
    p.add_argument(
        "--aiq-margin",
        type=float,
        default=0.01,
        help="K models: AIQ (a mean quality in [0, 1]) to beat serving by; 0.01 = 1 point",
    )
    p.add_argument("--min-queries", type=int, default=50, help="smallest held-out slice")
    p.add_argument(
        "--confidence",
        type=float,
        default=0.95,
        help="one-sided bootstrap lower bound of the gain must be > 0 at this confidence",
    )
    p.add_argument(
        "--resamples", type=int, default=1000, help="paired bootstrap resamples (0: no bound)"
    )
    p.add_argument("--max-drop", type=float, default=0.05, help="rollback: quality drop")
    p.add_argument("--min-count", type=int, default=50, help="rollback: grades per side")
    p.add_argument("--z", type=float, default=1.645, help="rollback: standard errors")


def register(sub: Any) -> None:
    """Add ``live`` and its subcommands to the ``dars-train`` parser."""
    live = sub.add_parser("live", help="learn from live traffic: export, retrain, watch")
    cmds = live.add_subparsers(dest="live_command", required=True, metavar="LIVE_COMMAND")

    p = cmds.add_parser("export", help="live store -> observations (.jsonl[.gz])")
    p.add_argument("--store", required=True, help="sqlite:///live.db or redis://host:6379/0")
    p.add_argument("--out", required=True, help="observation file to write")
    p.add_argument("--dataset", default="live", help="dataset name of the rows")
    p.set_defaults(func=_cmd_export)

    p = cmds.add_parser("retrain", help="watch, then train a candidate, gate, promote")
    _loop_args(p)
    p.add_argument("--pretrained", action="append", metavar="PATH", help="add this data")
    p.add_argument("--router", default="knn", help="two-model router kind (registry)")
    p.add_argument("--quality-router", default="knn_quality", help="K-model router kind (registry)")
    p.add_argument("--param", action="append", metavar="KEY=VALUE", help="router parameter")
    p.add_argument("--holdout", type=float, default=0.25, help="held-out share of queries")
    p.add_argument("--seed", type=int, default=0, help="seed of the split and the bootstrap")
    p.add_argument("--cloud-share", type=float, help="candidate's default threshold")
    p.add_argument("--every", type=float, metavar="SECONDS", help="repeat forever")
    p.set_defaults(func=_cmd_retrain)

    p = cmds.add_parser("watch", help="roll the last promotion back on a quality drop")
    _loop_args(p)
    p.set_defaults(func=_cmd_watch)
