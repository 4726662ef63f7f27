"""``dars-train collect``: rewrite, sample, grade and store DARS observations.

Everything can come from a YAML file (``--config``, see :mod:`router_models.collect.config`);
the flags override it. Endpoints on the command line are ``NAME=BASE_URL[,key=value...]``,
e.g. ``--model smollm2=http://127.0.0.1:8101/v1,price_out=0.06,max_concurrency=1``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import yaml

from router_models.collect.client import CollectError
from router_models.collect.config import ConfigError, load_config
from router_models.observations import ObservationError

__all__ = ["main", "parse_endpoint", "register"]

_NUMERIC_KEYS = {
    "price_in": float,
    "price_out": float,
    "rate_limit": float,
    "timeout": float,
    "backoff_s": float,
}


def parse_endpoint(spec: str) -> dict[str, Any]:
    """``NAME=URL[,key=value...]`` -> an endpoint mapping for the config."""
    head, *rest = spec.split(",")
    name, sep, url = head.partition("=")
    if not sep or not name or not url:
        raise ConfigError(f"endpoint {spec!r}: expected NAME=BASE_URL[,key=value...]")
    out: dict[str, Any] = {"name": name, "base_url": url}
    for item in rest:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"endpoint {spec!r}: {item!r} is not key=value")
        if key in ("max_concurrency", "max_attempts"):
            out[key] = int(value)
        elif key in _NUMERIC_KEYS:
            out[key] = _NUMERIC_KEYS[key](value)
        else:
            out[key] = value
    return out


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``collect`` subcommand to the trainer's CLI."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "collect",
        help="collect DARS observations from real models (rewrites x decodes, graded)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", type=Path, help="YAML config; flags below override it")
    p.add_argument("--prompts", action="append", default=[], metavar="PATH",
                   help="prompt set (.jsonl[.gz]); repeatable")  # fmt: skip
    p.add_argument("--split", action="append", dest="splits", metavar="SPLIT",
                   help="keep only these splits of --prompts files")  # fmt: skip
    p.add_argument("--limit", type=int, help="first N prompts of each --prompts file")
    p.add_argument("--grader", choices=["numeric", "choice", "short", "judge"],
                   help="grader for --prompts files (default: from the dataset)")  # fmt: skip
    p.add_argument("--model", action="append", default=[], metavar="NAME=URL[,k=v]",
                   help="model to sample; repeatable")  # fmt: skip
    p.add_argument("--endpoint", action="append", default=[], metavar="NAME=URL[,k=v]",
                   help="extra endpoint used only as rewriter or judge; repeatable")  # fmt: skip
    p.add_argument("--rewriter", metavar="NAME", help="endpoint that writes the rewrites")
    p.add_argument("--judge", metavar="NAME", help="endpoint that judges open-ended answers")
    p.add_argument("-k", "--rewrites", type=int, dest="k", help="rewrites per query")
    p.add_argument("-n", "--samples", type=int, dest="n", help="decodes per model and variant")
    p.add_argument("--temperature", type=float, help="sampling temperature")
    p.add_argument("--max-tokens", type=int, help="max output tokens per answer")
    p.add_argument("--min-similarity", type=float, help="rewrite embedding-similarity floor")
    p.add_argument("--seed", type=int, help="base seed of every decode and rewrite")
    p.add_argument("--out", help="observation store (.jsonl, append-only)")
    p.add_argument("--export", type=Path, metavar="PATH.jsonl.gz",
                   help="afterwards, write a sorted reproducible copy of the store")  # fmt: skip
    p.add_argument("--parallel-queries", type=int, default=3,
                   help="queries in flight at once (default 3)")  # fmt: skip
    p.add_argument("--time-budget", type=float, metavar="MINUTES",
                   help="start no new query after this long; rerun to continue")  # fmt: skip
    p.add_argument("--dry-run", action="store_true",
                   help="print calls, tokens and estimated cost, then stop")  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=main)
    return p


def _merged(args: argparse.Namespace) -> dict[str, Any]:
    data: dict[str, Any] = {}
    if args.config is not None:
        try:
            data = yaml.safe_load(args.config.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read {args.config}: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{args.config}: the config must be a mapping")
    prompts = list(data.get("prompts") or [])
    for path in args.prompts:
        source: dict[str, Any] = {"path": path}
        if args.splits:
            source["splits"] = args.splits
        if args.limit is not None:
            source["limit"] = args.limit
        if args.grader:
            source["grader"] = args.grader
        prompts.append(source)
    data["prompts"] = prompts
    data["models"] = [*(data.get("models") or []), *map(parse_endpoint, args.model)]
    data["endpoints"] = [*(data.get("endpoints") or []), *map(parse_endpoint, args.endpoint)]
    rewrite = dict(data.get("rewrite") or {})
    for key, value in (
        ("model", args.rewriter),
        ("k", args.k),
        ("min_similarity", args.min_similarity),
    ):
        if value is not None:
            rewrite[key] = value
    data["rewrite"] = rewrite
    sampling = dict(data.get("sampling") or {})
    for key, value in (
        ("n", args.n),
        ("temperature", args.temperature),
        ("max_tokens", args.max_tokens),
    ):
        if value is not None:
            sampling[key] = value
    data["sampling"] = sampling
    if args.judge:
        data["judge"] = {**(data.get("judge") or {}), "model": args.judge}
    for key, value in (("out", args.out), ("seed", args.seed)):
        if value is not None:
            data[key] = value
    return data


def main(args: argparse.Namespace) -> int:
    """Run (or plan) a collection; 0 on success, 1 when calls failed, 2 on a usage error."""
    from router_models.collect.runner import collect, dry_run, export

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per call drowns the bar
    try:
        config = load_config(_merged(args))
        if args.dry_run:
            print(dry_run(config))
            return 0
        print(dry_run(config), file=sys.stderr)
        summary = collect(
            config,
            progress=not args.no_progress,
            parallel_queries=args.parallel_queries,
            time_budget_s=None if args.time_budget is None else args.time_budget * 60,
        )
        print(summary.format(), file=sys.stderr)
        if args.export is not None:
            rows = export(config.out, args.export)
            print(f"exported {rows} observations to {args.export}", file=sys.stderr)
    except (CollectError, ObservationError, ValueError) as exc:
        print(f"dars-train collect: error: {exc}", file=sys.stderr)
        return 2
    return 1 if summary.failed else 0
