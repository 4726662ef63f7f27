"""``dars-train``: the command line over :mod:`router_models.pipeline`.

Subcommands run one stage each (``labels``, ``train``, ``evaluate``, ``export``) or all of them
from one YAML file (``run``, see :mod:`router_models.config`); ``collect`` gathers new
observations from real models. Every stage is a plain function in
:mod:`router_models.pipeline`, re-exported here, so scripts and reports drive the same code as
the CLI. A run is reproducible: ``--seed`` seeds Python, NumPy, torch, the single-shot draws
and the estimator's ``random_state``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from router_models.config import (
    ConfigError,
    DataConfig,
    EmbeddingConfig,
    RunConfig,
    load_config,
)
from router_models.evaluate import markdown_table, save_reports, truth_from_observations
from router_models.features import Embedder
from router_models.labels import SCHEMES, load_labels
from router_models.observations import Observation, ObservationError
from router_models.pipeline import (
    TrainedRouter,
    build_labels,
    evaluate_models,
    export_router,
    load_data,
    run_pipeline,
    say,
    seed_everything,
    train_router,
)
from router_models.splits import Holdout, Side

__all__ = [
    "ConfigError",
    "DataConfig",
    "RunConfig",
    "TrainedRouter",
    "build_labels",
    "build_parser",
    "evaluate_models",
    "export_router",
    "load_config",
    "load_data",
    "main",
    "run_pipeline",
    "seed_everything",
    "train_router",
]


def _key_values(items: Sequence[str] | None) -> dict[str, Any]:
    """``key=value`` pairs; values parsed as YAML (``0.2`` -> float, ``[1, 1]`` -> list)."""
    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"expected key=value, got {item!r}")
        out[key] = yaml.safe_load(value)
    return out


def _add_data_args(p: argparse.ArgumentParser, default_split: str | None) -> None:
    p.add_argument(
        "--data",
        action="append",
        required=True,
        metavar="PATH",
        help="observation file or directory (.jsonl[.gz]); repeatable",
    )
    p.add_argument(
        "--dataset",
        action="append",
        dest="datasets",
        metavar="NAME",
        help="keep only these datasets",
    )
    p.add_argument(
        "--split",
        action="append",
        dest="splits",
        metavar="SPLIT",
        help=f"keep only these splits (default: {default_split or 'all rows'})",
    )
    p.add_argument(
        "--exclude-flag",
        action="append",
        dest="exclude_flags",
        default=[],
        metavar="KEY",
        help="drop rows whose meta.KEY is true, e.g. contaminated",
    )
    _add_holdout_args(p, "all rows' splits are then kept unless --split is given")
    p.set_defaults(default_split=default_split)


def _add_holdout_args(p: argparse.ArgumentParser, note: str) -> None:
    p.add_argument(
        "--holdout",
        type=float,
        metavar="FRACTION",
        help="held-out split by query: about FRACTION of the query ids (seeded hash) are the "
        f"test side, the rest the training side; for data whose rows are all one split ({note})",
    )
    p.add_argument(
        "--holdout-seed",
        type=int,
        metavar="N",
        help="seed of the held-out split (default: the run's seed for 'run', else 0)",
    )


def _add_embedding_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache-dir", help="embedding cache (default ~/.cache/dars-router/embeddings)")
    p.add_argument("--batch-size", type=int, default=64, help="encoder batch size")
    p.add_argument("--encoder-path", help="local encoder directory (default: packaged MiniLM)")
    p.add_argument("--device", default="auto", help="encoder device: auto, cpu, cuda")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _data_config(args: argparse.Namespace) -> DataConfig:
    default = args.default_split if args.holdout is None else None
    splits = args.splits or ([default] if default else None)
    return DataConfig(
        paths=list(args.data),
        datasets=args.datasets,
        splits=splits,
        exclude_flags=list(args.exclude_flags),
    )


def _holdout(args: argparse.Namespace) -> Holdout | None:
    if args.holdout is None:
        return None
    try:
        return Holdout(args.holdout, args.holdout_seed)
    except ValueError as exc:
        raise ConfigError(f"--holdout: {exc}") from exc


def _load(args: argparse.Namespace, side: Side) -> list[Observation]:
    """The rows of the command's data options, on one side of ``--holdout`` if given."""
    return load_data(_data_config(args), holdout=_holdout(args), side=side)


def _embedder(args: argparse.Namespace) -> Embedder:
    return EmbeddingConfig(
        cache_dir=args.cache_dir,
        batch_size=args.batch_size,
        model_path=args.encoder_path,
        device=args.device,
    ).embedder(progress=not args.no_progress)


def _cmd_labels(args: argparse.Namespace) -> int:
    seed_everything(args.seed)
    if args.pairs == "by-mean" and (args.weak or args.strong):
        raise ConfigError(
            "--pairs by-mean picks the weakest and strongest model itself; "
            "drop --weak/--strong, or drop --pairs to label the named pair"
        )
    rows = _load(args, "train")
    pairs: Any = args.pairs
    if pairs not in (None, "by-mean", "all"):
        pairs = [p.split(",") for p in pairs.split(";")]
    labels = build_labels(
        rows,
        weak=args.weak,
        strong=args.strong,
        scheme=args.scheme,
        params=_key_values(args.param),
        pairs=pairs,
        seed=args.seed,
        embed=_embedder(args) if args.scheme == "semantic-entropy" else None,
    )
    labels.save(args.out)
    mean_target = float(np.mean(labels.target))
    say(
        f"{len(labels)} labels ({labels.weak_model} -> {labels.strong_model}), "
        f"mean target {mean_target:.3f} -> {args.out}"
    )
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    labels = load_labels(args.labels)
    router = train_router(
        labels, _embedder(args), kind=args.router, params=_key_values(args.param), seed=args.seed
    )
    router.save(args.out)
    say(f"trained {router.kind} on {router.n_train} queries -> {args.out}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    truth = truth_from_observations(_load(args, "test"), args.weak, args.strong)
    routers = {name: TrainedRouter.load(path) for name, path in _key_values_raw(args.router)}
    onnx_files = dict(_key_values_raw(args.onnx))
    if not routers and not onnx_files and not args.baselines_only:
        raise ConfigError("give --router NAME=PATH and/or --onnx NAME=PATH (or --baselines-only)")
    reports = evaluate_models(truth, _embedder(args), routers=routers, onnx_files=onnx_files)
    title = args.title or f"{args.weak} -> {args.strong} ({len(truth.query_ids)} queries)"
    save_reports(reports, args.out_dir, name=args.name, title=title)
    print(markdown_table(reports, title=title))
    return 0


def _key_values_raw(items: Sequence[str] | None) -> list[tuple[str, str]]:
    """``NAME=PATH`` pairs, kept as strings; a bare PATH is named after its file."""
    out = []
    for item in items or ():
        name, sep, path = item.partition("=")
        out.append((name, path) if sep else (Path(item).stem, item))
    return out


def _cmd_export(args: argparse.Namespace) -> int:
    router = TrainedRouter.load(args.router)
    rows = _load(args, "test")
    prompts = list(dict.fromkeys(obs.prompt for obs in rows))
    path = export_router(
        router,
        args.out,
        calibration_prompts=prompts,
        embedder=_embedder(args),
        weak=args.weak,
        strong=args.strong,
        cloud_share=args.cloud_share,
        default_threshold=args.threshold,
    )
    say(f"wrote {path}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if args.seed is not None:
        config.seed = args.seed
    if args.output_dir:
        config.output_dir = args.output_dir
    if args.holdout is not None:
        config.holdout = _holdout(args)
    elif args.holdout_seed is not None:
        if config.holdout is None:
            raise ConfigError("--holdout-seed needs --holdout FRACTION or data.holdout")
        config.holdout = Holdout(config.holdout.fraction, args.holdout_seed)
    files = run_pipeline(config, progress=not args.no_progress)
    print(files["markdown"].read_text(encoding="utf-8"))
    for name, path in files.items():
        say(f"{name}: {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``dars-train`` parser with every subcommand (``collect`` from the collector)."""
    parser = argparse.ArgumentParser(
        prog="dars-train",
        description="Train DARS routers from LLM observations and export them to ONNX.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("labels", help="label a (weak, strong) pair with one scheme")
    _add_data_args(p, "train")
    p.add_argument("--weak", help="weak / edge model (default: lowest mean quality)")
    p.add_argument("--strong", help="strong / cloud model (default: highest mean quality)")
    p.add_argument("--pairs", help="'by-mean', 'all', or 'w1,s1;w2,s2' for stacked pairs")
    p.add_argument("--scheme", choices=SCHEMES, default="dars")
    p.add_argument(
        "--param",
        action="append",
        metavar="KEY=VALUE",
        help="scheme parameter, e.g. lam=0.05 beta=0.2 tau=0.1; repeatable",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="label file to write (.json)")
    _add_embedding_args(p)
    p.set_defaults(func=_cmd_labels)

    p = sub.add_parser("train", help="fit a router on a label file")
    p.add_argument("--labels", required=True, help="label file from 'labels'")
    p.add_argument("--router", default="knn", help="router kind from the registry")
    p.add_argument("--param", action="append", metavar="KEY=VALUE", help="router parameter")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="trained router to write (.pkl)")
    _add_embedding_args(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("evaluate", help="CPT / APGR / AUC of routers on a test set")
    _add_data_args(p, "test")
    p.add_argument("--weak", required=True)
    p.add_argument("--strong", required=True)
    p.add_argument("--router", action="append", metavar="[NAME=]PATH", help="trained .pkl")
    p.add_argument("--onnx", action="append", metavar="[NAME=]PATH", help="router .onnx file")
    p.add_argument("--baselines-only", action="store_true", help="only random/length/oracle")
    p.add_argument("--out-dir", required=True, help="where the .md, .json and .png go")
    p.add_argument("--name", default="evaluation", help="file name stem of the outputs")
    p.add_argument("--title", help="table and plot title")
    _add_embedding_args(p)
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("export", help="write the ONNX router file the service loads")
    _add_data_args(p, None)
    p.add_argument("--router", required=True, help="trained router (.pkl)")
    p.add_argument("--out", required=True, help="ONNX file to write")
    p.add_argument("--weak", help="edge model name for the metadata (default: training pair)")
    p.add_argument("--strong", help="cloud model name for the metadata")
    p.add_argument("--cloud-share", type=float, help="default threshold = this share to cloud")
    p.add_argument("--threshold", type=float, help="default threshold (overrides --cloud-share)")
    _add_embedding_args(p)
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("run", help="labels -> train -> evaluate -> export from one YAML file")
    p.add_argument("--config", required=True, help="YAML run config")
    p.add_argument("--seed", type=int, help="override the config's seed")
    p.add_argument("--output-dir", help="override the config's output_dir")
    _add_holdout_args(p, "overrides data.holdout; splits data.train and data.test by query")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_run)

    from router_models.collect.cli import register
    from router_models.live.cli import register as register_live

    register(sub)
    register_live(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``dars-train`` and ``python -m router_models``; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except (ConfigError, ObservationError, FileNotFoundError, ValueError) as exc:
        print(f"dars-train {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return code
