"""``dars-train``: observations -> labels -> router -> evaluation -> ONNX file.

Subcommands run one stage each (``labels``, ``train``, ``evaluate``, ``export``) or all of them
from one YAML file (``run``); ``collect`` gathers new observations from real models. Every
stage is also a plain function here (:func:`build_labels`, :func:`train_router`,
:func:`evaluate_models`, :func:`export_router`, :func:`run_pipeline`), so scripts and reports
drive the same code as the CLI. A run is reproducible: ``--seed`` seeds Python, NumPy, torch,
the single-shot draws and the estimator's ``random_state``.

Example config (``dars-train run --config run.yaml``)::

    seed: 0
    output_dir: runs/gsm8k-dars
    models: {weak: mixtral-8x7b-instruct-v0.1, strong: gpt-4-1106-preview}
    data:
      train: {paths: [data/train.jsonl.gz], splits: [train]}
      test: {paths: [data/test.jsonl.gz], splits: [test], exclude_flags: [contaminated]}
    labels: {scheme: dars, params: {lam: 0.05, beta: 0.2}, pairs: null}
    router: {kind: knn, params: {n_neighbors: 10}}
    embedding: {cache_dir: null, batch_size: 64}
    export: {cloud_share: 0.5}
"""

from __future__ import annotations

import argparse
import inspect
import json
import pickle
import random
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from router_models.contract import DEFAULT_EMBEDDING_MODEL_ID, Calibration
from router_models.evaluate import (
    RouterReport,
    Truth,
    evaluate_routers,
    markdown_table,
    save_reports,
    truth_from_observations,
)
from router_models.features import Embedder
from router_models.labels import (
    SCHEMES,
    LabelSet,
    NliEquivalence,
    choose_pair,
    load_labels,
    make_labels,
    multi_pair_labels,
)
from router_models.observations import Observation, ObservationError, PathLike, read_observations

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


class ConfigError(ValueError):
    """A config file or command line that cannot describe a run."""


# --------------------------------------------------------------------------- config


def _from_mapping(cls: Any, data: Any, where: str) -> Any:
    """Build a config dataclass from a mapping, refusing unknown keys by name."""
    if data is None:
        return cls()
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where} must be a mapping, got {type(data).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in {where}; allowed: {sorted(known)}")
    return cls(**data)


@dataclass
class DataConfig:
    """Which observation rows to read: files plus the loader's filters."""

    paths: list[str] = field(default_factory=list)
    datasets: list[str] | None = None
    splits: list[str] | None = None
    exclude_flags: list[str] = field(default_factory=list)


@dataclass
class EmbeddingConfig:
    cache_dir: str | None = None
    batch_size: int = 64
    model_path: str | None = None
    model_id: str = DEFAULT_EMBEDDING_MODEL_ID
    device: str = "auto"

    def embedder(self, progress: bool = True) -> Embedder:
        return Embedder(
            model_path=self.model_path,
            model_id=self.model_id,
            cache_dir=self.cache_dir,
            batch_size=self.batch_size,
            device=self.device,
            progress=progress,
        )


@dataclass
class RunConfig:
    """One ``dars-train run``: data, model pair, label scheme, router, seed, output dir.

    ``labels.pairs``: null = train on ``models`` (the deployed pair); ``by-mean`` = the
    training data's weakest and strongest model; ``all`` = every pair ordered by mean
    quality; or a list of ``[weak, strong]``. ``exclude_test_queries`` drops training rows
    whose query id or prompt also occurs in the test data.
    """

    models: dict[str, str]
    train: DataConfig
    test: DataConfig
    seed: int = 0
    output_dir: str = "runs/dars"
    label_scheme: str = "dars"
    label_params: dict[str, Any] = field(default_factory=dict)
    label_pairs: str | list[list[str]] | None = None
    router_kind: str = "knn"
    router_params: dict[str, Any] = field(default_factory=dict)
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    cloud_share: float | None = None
    default_threshold: float | None = None
    exclude_test_queries: bool = True


def load_config(source: PathLike | Mapping[str, Any]) -> RunConfig:
    """Parse a run config (YAML file or mapping) into a :class:`RunConfig`."""
    if isinstance(source, Mapping):
        data: Any = dict(source)
    else:
        try:
            data = yaml.safe_load(Path(source).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config {source}: {exc}") from exc
    if not isinstance(data, Mapping):
        raise ConfigError("the config must be a mapping")
    allowed = {
        "seed",
        "output_dir",
        "models",
        "data",
        "labels",
        "router",
        "embedding",
        "export",
        "exclude_test_queries",
    }
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(f"unknown top-level key(s) {unknown}; allowed: {sorted(allowed)}")
    models = data.get("models") or {}
    if not isinstance(models, Mapping) or not models.get("weak") or not models.get("strong"):
        raise ConfigError("models must name 'weak' and 'strong'")
    sets = data.get("data") or {}
    if not isinstance(sets, Mapping) or not sets.get("train") or not sets.get("test"):
        raise ConfigError("data must have 'train' and 'test' sections with 'paths'")
    labels = _section(data, "labels", {"scheme", "params", "pairs"})
    router = _section(data, "router", {"kind", "params"})
    export = _section(data, "export", {"cloud_share", "default_threshold"})
    scheme = str(labels.get("scheme", "dars"))
    if scheme not in SCHEMES:
        raise ConfigError(f"labels.scheme must be one of {list(SCHEMES)}, got {scheme!r}")
    config = RunConfig(
        models={"weak": str(models["weak"]), "strong": str(models["strong"])},
        train=_from_mapping(DataConfig, sets["train"], "data.train"),
        test=_from_mapping(DataConfig, sets["test"], "data.test"),
        seed=int(data.get("seed", 0)),
        output_dir=str(data.get("output_dir", "runs/dars")),
        label_scheme=scheme,
        label_params=dict(labels.get("params") or {}),
        label_pairs=labels.get("pairs"),
        router_kind=str(router.get("kind", "knn")),
        router_params=dict(router.get("params") or {}),
        embedding=_from_mapping(EmbeddingConfig, data.get("embedding"), "embedding"),
        cloud_share=export.get("cloud_share"),
        default_threshold=export.get("default_threshold"),
        exclude_test_queries=bool(data.get("exclude_test_queries", True)),
    )
    for name in ("train", "test"):
        if not getattr(config, name).paths:
            raise ConfigError(f"data.{name}.paths must list at least one observation file")
    return config


def _section(data: Mapping[str, Any], name: str, keys: set[str]) -> Mapping[str, Any]:
    section = data.get(name) or {}
    if not isinstance(section, Mapping):
        raise ConfigError(f"{name} must be a mapping")
    unknown = sorted(set(section) - keys)
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in {name}; allowed: {sorted(keys)}")
    return section


# --------------------------------------------------------------------------- stages


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (the estimators get ``random_state`` separately)."""
    random.seed(seed)
    np.random.seed(seed)
    try:
        import torch
    except ImportError:  # torch is a dependency; stay usable without it for data-only work
        return
    torch.manual_seed(seed)


def load_data(data: DataConfig, *, exclude: Truth | None = None) -> list[Observation]:
    """Scored observations described by a :class:`DataConfig`.

    With ``exclude`` (a test set), rows whose query id or prompt occurs in it are dropped,
    so no test query leaks into training.
    """
    rows = read_observations(
        data.paths,
        datasets=data.datasets,
        splits=data.splits,
        exclude_flags=data.exclude_flags,
        scored_only=True,
    )
    if exclude is not None:
        ids, prompts = set(exclude.query_ids), set(exclude.prompts)
        rows = [obs for obs in rows if obs.query_id not in ids and obs.prompt not in prompts]
    if not rows:
        raise ConfigError(f"no scored observations in {data.paths} after filtering")
    return rows


def _label_params(scheme: str, params: Mapping[str, Any], seed: int, embed: Any) -> dict[str, Any]:
    """Scheme keyword arguments from config values (seed, NLI path, embed function)."""
    out = dict(params)
    if scheme == "single-shot":
        out.setdefault("seed", seed)
    if scheme == "semantic-entropy":
        nli_path = out.pop("nli_model", None)
        if nli_path:
            out["nli"] = NliEquivalence(nli_path)
        elif out.get("mode", "auto") in ("auto", "embedding") and embed is not None:
            out["embed"] = embed
    if "prior" in out:
        out["prior"] = tuple(out["prior"])
    return out


def build_labels(
    observations: Sequence[Observation],
    *,
    weak: str | None,
    strong: str | None,
    scheme: str,
    params: Mapping[str, Any] | None = None,
    pairs: str | Sequence[Sequence[str]] | None = None,
    seed: int = 0,
    embed: Any = None,
) -> LabelSet:
    """Labels for one pair (given, or chosen by mean quality) or several stacked pairs.

    ``pairs``: None = (weak, strong); ``by-mean`` = :func:`choose_pair`; ``all`` = every
    pair ordered by mean quality; a list of [weak, strong] = those pairs.
    """
    kwargs = _label_params(scheme, params or {}, seed, embed)
    if pairs is None or pairs == "by-mean":
        if pairs == "by-mean":
            weak = strong = None
        weak, strong = choose_pair(observations, weak, strong)
        return make_labels(observations, weak, strong, scheme, **kwargs)
    if pairs == "all":
        return multi_pair_labels(observations, scheme, None, **kwargs)
    if isinstance(pairs, str):
        raise ConfigError(f"labels.pairs must be null, 'by-mean', 'all' or a list, got {pairs!r}")
    pair_list = [(str(p[0]), str(p[1])) for p in pairs]
    return multi_pair_labels(observations, scheme, pair_list, **kwargs)


@dataclass
class TrainedRouter:
    """A fitted estimator and what the export needs to describe it (pickled by ``train``).

    Pickle runs code when loaded: load only router files you made yourself.
    """

    kind: str
    params: dict[str, Any]
    estimator: Any
    label_scheme: str
    weak_model: str
    strong_model: str
    embedding_model_id: str
    embedding_dim: int
    seed: int
    n_train: int

    def save(self, path: PathLike) -> Path:
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "wb") as handle:
            pickle.dump(self, handle)
        return out

    @classmethod
    def load(cls, path: PathLike) -> TrainedRouter:
        with open(path, "rb") as handle:
            loaded = pickle.load(handle)
        if not isinstance(loaded, cls):
            raise ValueError(f"{path} does not hold a trained router")
        return loaded

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.estimator.predict(np.asarray(X, dtype=np.float32)), dtype=np.float64)


def train_router(
    labels: LabelSet,
    embedder: Embedder,
    *,
    kind: str,
    params: Mapping[str, Any] | None = None,
    seed: int = 0,
) -> TrainedRouter:
    """Embed the label prompts and fit a registry router on (embedding, target, weight)."""
    from router_models.registry import ROUTERS, make_router

    if kind not in ROUTERS:
        raise ConfigError(f"unknown router {kind!r}; choose from {sorted(ROUTERS)}")
    kwargs = dict(params or {})
    if "random_state" in inspect.signature(ROUTERS[kind]).parameters:
        kwargs.setdefault("random_state", seed)
    seed_everything(seed)
    X = embedder(list(labels.prompts))
    estimator = make_router(kind, **kwargs)
    estimator.fit(X, labels.target.astype(np.float64), sample_weight=labels.weight)
    return TrainedRouter(
        kind=kind,
        params=kwargs,
        estimator=estimator,
        label_scheme=labels.scheme,
        weak_model=labels.weak_model,
        strong_model=labels.strong_model,
        embedding_model_id=embedder.model_id,
        embedding_dim=int(X.shape[1]),
        seed=seed,
        n_train=len(labels),
    )


def evaluate_models(
    truth: Truth,
    embedder: Embedder,
    *,
    routers: Mapping[str, TrainedRouter] | None = None,
    onnx_files: Mapping[str, PathLike] | None = None,
    baselines: bool = True,
) -> list[RouterReport]:
    """Reports of trained routers and/or ONNX router files on one test set (+ baselines)."""
    scores: dict[str, np.ndarray] = {}
    if not routers and not onnx_files:
        return evaluate_routers(scores, truth, baselines=baselines)
    X = embedder(list(truth.prompts))
    for name, router in (routers or {}).items():
        scores[name] = router.predict(X)
    if onnx_files:
        from router_models.export_onnx import load_router_scores

        for name, path in onnx_files.items():
            scores[name] = load_router_scores(path, X)
    return evaluate_routers(scores, truth, baselines=baselines)


def export_router(
    router: TrainedRouter,
    path: PathLike,
    *,
    calibration_prompts: Sequence[str],
    embedder: Embedder,
    weak: str | None = None,
    strong: str | None = None,
    cloud_share: float | None = None,
    default_threshold: float | None = None,
) -> Path:
    """Write the ONNX router with its metadata; calibration = score quantiles on held-out prompts.

    The default threshold is ``default_threshold`` if given, else the threshold that sends
    ``cloud_share`` of the calibration prompts to the cloud, else 0.5.
    """
    from router_models.export_onnx import build_metadata, save_router

    if not calibration_prompts:
        raise ConfigError("export needs calibration prompts")
    scores = router.predict(embedder(list(calibration_prompts)))
    calibration = Calibration.from_scores(scores)
    if default_threshold is None:
        default_threshold = (
            0.5 if cloud_share is None else calibration.threshold_for_cloud_share(cloud_share)
        )
    metadata = build_metadata(
        embedding_model_id=router.embedding_model_id,
        embedding_dim=router.embedding_dim,
        label_scheme=router.label_scheme,
        default_threshold=float(np.clip(default_threshold, 0.0, 1.0)),
        calibration=calibration,
        models={"edge": weak or router.weak_model, "cloud": strong or router.strong_model},
        router=router.kind,
    )
    return save_router(router.estimator.to_onnx(metadata), Path(path))


def run_pipeline(config: RunConfig, *, progress: bool = True) -> dict[str, Path]:
    """labels -> train -> evaluate -> export for one config; returns the written files."""
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(config.seed)
    embedder = config.embedding.embedder(progress)
    weak, strong = config.models["weak"], config.models["strong"]
    _say("reading test observations")
    test_rows = load_data(config.test)
    truth = truth_from_observations(test_rows, weak, strong)
    _say("reading training observations")
    train_rows = load_data(config.train, exclude=truth if config.exclude_test_queries else None)
    _say(f"labels: {config.label_scheme}")
    labels = build_labels(
        train_rows,
        weak=weak,
        strong=strong,
        scheme=config.label_scheme,
        params=config.label_params,
        pairs=config.label_pairs,
        seed=config.seed,
        embed=embedder,
    )
    files = {"labels": out / "labels.json"}
    labels.save(files["labels"])
    _say(f"training {config.router_kind} on {len(labels)} queries")
    router = train_router(
        labels, embedder, kind=config.router_kind, params=config.router_params, seed=config.seed
    )
    files["router"] = router.save(out / "router.pkl")
    _say("evaluating")
    name = f"{config.router_kind}-{config.label_scheme}"
    reports = evaluate_models(truth, embedder, routers={name: router})
    files.update(save_reports(reports, out, title=f"{weak} -> {strong}"))
    _say("exporting")
    files["onnx"] = export_router(
        router,
        out / "router.onnx",
        calibration_prompts=truth.prompts,
        embedder=embedder,
        weak=weak,
        strong=strong,
        cloud_share=config.cloud_share,
        default_threshold=config.default_threshold,
    )
    files["config"] = out / "config.resolved.json"
    files["config"].write_text(json.dumps(asdict(config), indent=2), encoding="utf-8")
    return files


def _say(message: str) -> None:
    print(f"dars-train: {message}", file=sys.stderr)


# --------------------------------------------------------------------------- argparse


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
    p.set_defaults(default_split=default_split)


def _add_embedding_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache-dir", help="embedding cache (default ~/.cache/dars-router/embeddings)")
    p.add_argument("--batch-size", type=int, default=64, help="encoder batch size")
    p.add_argument("--encoder-path", help="local encoder directory (default: packaged MiniLM)")
    p.add_argument("--device", default="auto", help="encoder device: auto, cpu, cuda")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _data_config(args: argparse.Namespace) -> DataConfig:
    splits = args.splits or ([args.default_split] if args.default_split else None)
    return DataConfig(
        paths=list(args.data),
        datasets=args.datasets,
        splits=splits,
        exclude_flags=list(args.exclude_flags),
    )


def _embedder(args: argparse.Namespace) -> Embedder:
    return EmbeddingConfig(
        cache_dir=args.cache_dir,
        batch_size=args.batch_size,
        model_path=args.encoder_path,
        device=args.device,
    ).embedder(progress=not args.no_progress)


def _cmd_labels(args: argparse.Namespace) -> int:
    seed_everything(args.seed)
    rows = load_data(_data_config(args))
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
    _say(
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
    _say(f"trained {router.kind} on {router.n_train} queries -> {args.out}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    truth = truth_from_observations(load_data(_data_config(args)), args.weak, args.strong)
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
    rows = load_data(_data_config(args))
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
    _say(f"wrote {path}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if args.seed is not None:
        config.seed = args.seed
    if args.output_dir:
        config.output_dir = args.output_dir
    files = run_pipeline(config, progress=not args.no_progress)
    print(files["markdown"].read_text(encoding="utf-8"))
    for name, path in files.items():
        _say(f"{name}: {path}")
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
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_run)

    from router_models.collect.cli import register

    register(sub)
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
