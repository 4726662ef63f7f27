"""What the experiment drivers share: leakage-safe data, stacked model pairs, fits, report files.

The drivers compare label schemes and routers under one protocol, so the steps that decide a
result (which training rows are allowed, how training model pairs stand in for the deployed
pair, how a router is fitted and scored) live here once:

- **Leakage**: a training row is dropped when its normalised prompt text (NFKC, quotes unified,
  whitespace collapsed, lower case) equals a test prompt, on top of the flag filters.
- **Pairs**: training data rarely has the deployed (edge, cloud) models, so labels come from
  the training source's own models: ``extreme`` = its weakest vs strongest model by mean
  quality, ``all`` = every pair whose mean quality differs by at least ``min_gap``, stacked
  (:func:`router_models.labels.multi_pair_labels`; every row keeps its pair). kNN and MLP
  fit the stacked rows collapsed per query (weighted mean target, summed weight:
  the same weighted cross-entropy); MF and SW-ranking fit the model pairs natively
  (:func:`router_models.pipeline.train_router`) and score the first source's weakest vs
  strongest model.
- **Folds**: queries go to folds by a seeded hash of their id, so a query is never split.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import shlex
import sys
import time
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from router_models.evaluate import RouterReport, Truth
from router_models.features import Embedder
from router_models.labels import (
    PAIR_MAPPINGS,
    LabelSet,
    concat_label_sets,
    model_pairs,
    multi_pair_labels,
)
from router_models.observations import Observation, read_observations
from router_models.pipeline import seed_everything, train_router
from router_models.registry import make_router
from router_models.splits import query_fold

__all__ = [
    "PAIRED_KINDS",
    "PAIR_MAPPINGS",
    "ROUTER_KINDS",
    "FloatArray",
    "ReportFiles",
    "base_parser",
    "drop_test_prompts",
    "fit_and_score",
    "fit_router",
    "fmt",
    "limit_threads",
    "load_rows",
    "make_embedder",
    "metric_row",
    "model_pairs",
    "normalize_text",
    "paired_labels",
    "predict",
    "query_fold",
    "say",
    "sha256_of",
    "summarise",
    "truth_rows",
]

FloatArray = npt.NDArray[np.float64]
ROUTER_KINDS: tuple[str, ...] = ("knn", "mlp", "mf", "sw_ranking")
# Routers that fit several (model_a, model_b) pairs natively through ``fit(..., pairs=...)``.
PAIRED_KINDS: tuple[str, ...] = ("mf", "sw_ranking")
_PREDICT_CHUNK = 2048
_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'})


# --------------------------------------------------------------------------- data


def normalize_text(text: str) -> str:
    """The duplicate test: NFKC, quotes unified, whitespace collapsed, lower case."""
    return " ".join(unicodedata.normalize("NFKC", text).translate(_QUOTES).split()).lower()


def load_rows(
    path: Path,
    *,
    exclude_flags: Iterable[str] = (),
    drop_datasets: Iterable[str] = (),
    drop_models: Iterable[str] = (),
    models: Iterable[str] | None = None,
    splits: Iterable[str] | None = None,
) -> list[Observation]:
    """Scored rows of one observation file, minus flagged rows, datasets and models."""
    skip_datasets, skip_models = frozenset(drop_datasets), frozenset(drop_models)
    rows = read_observations(
        path,
        models=None if models is None else list(models),
        splits=None if splits is None else list(splits),
        exclude_flags=list(exclude_flags),
        scored_only=True,
    )
    return [o for o in rows if o.dataset not in skip_datasets and o.model not in skip_models]


def drop_test_prompts(
    rows: Sequence[Observation], test_prompts: Iterable[str]
) -> tuple[list[Observation], int]:
    """Rows whose normalised prompt is not a test prompt, and how many queries were dropped."""
    banned = {normalize_text(p) for p in test_prompts}
    seen: dict[str, bool] = {}
    kept, dropped = [], set()
    for obs in rows:
        leak = seen.get(obs.prompt)
        if leak is None:
            leak = seen[obs.prompt] = normalize_text(obs.prompt) in banned
        if leak:
            dropped.add(obs.query_id)
        else:
            kept.append(obs)
    return kept, len(dropped)


def truth_rows(truth: Truth, keep: npt.NDArray[np.bool_]) -> Truth:
    """The queries of a test set where ``keep`` is true."""
    index = np.flatnonzero(keep)
    return Truth(
        query_ids=tuple(truth.query_ids[i] for i in index),
        prompts=tuple(truth.prompts[i] for i in index),
        weak=truth.weak[index],
        strong=truth.strong[index],
        weak_model=truth.weak_model,
        strong_model=truth.strong_model,
    )


def sha256_of(path: Path) -> str:
    """Hex digest of a file (the data files named in a report)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------- labels


def paired_labels(
    sources: Sequence[Sequence[Observation]],
    scheme: str,
    mapping: str,
    *,
    min_gap: float = 0.05,
    pairs: Sequence[Sequence[tuple[str, str]]] | None = None,
    **params: Any,
) -> LabelSet:
    """Labels of every source's pairs (``pairs`` per source, or ``mapping``), stacked; they
    score the first source's weakest vs strongest model (or its first given pair)."""
    sets = [
        multi_pair_labels(
            rows,
            scheme,
            None if pairs is None else list(pairs[k]),
            mapping=mapping,
            min_gap=min_gap,
            **params,
        )
        for k, rows in enumerate(sources)
    ]
    return concat_label_sets(sets) if len(sets) > 1 else sets[0]


# --------------------------------------------------------------------------- routers


def limit_threads(n: int = 1) -> None:
    """One torch thread (the machine is shared); set before any fit."""
    import torch

    torch.set_num_threads(n)


def make_embedder(cache_dir: str | None = None, progress: bool = False) -> Embedder:
    """The cached MiniLM embedder on the CPU (the cache is shared by every run)."""
    return Embedder(cache_dir=cache_dir, device="cpu", progress=progress, chunk_size=1024)


def _collapse(
    keys: Sequence[str], target: FloatArray, weight: FloatArray
) -> tuple[list[str], FloatArray, FloatArray]:
    """One row per key: weighted mean target and summed weight (same weighted BCE)."""
    order = list(dict.fromkeys(keys))
    position = {k: i for i, k in enumerate(order)}
    index = np.asarray([position[k] for k in keys], dtype=np.intp)
    total: FloatArray = np.bincount(index, weights=weight, minlength=len(order)).astype(np.float64)
    mass = np.bincount(index, weights=weight * target, minlength=len(order))
    flat = np.full(len(order), float(np.average(target)))
    mean: FloatArray = np.divide(mass, total, out=flat, where=total > 0)
    return order, np.clip(mean, 0.0, 1.0), total


def fit_router(
    kind: str,
    labels: LabelSet,
    embed: Embedder,
    *,
    seed: int = 0,
    params: Mapping[str, Any] | None = None,
) -> Any:
    """A registry router fitted on stacked labels (pair-native for MF / SW-ranking)."""
    kwargs = dict(params or {})
    kwargs.setdefault("random_state", seed)
    if kind in PAIRED_KINDS:
        return train_router(labels, embed, kind=kind, params=kwargs, seed=seed).estimator
    seed_everything(seed)
    prompts, target, weight = _collapse(labels.prompts, labels.target, labels.weight)
    estimator = make_router(kind, **kwargs)
    keep = weight > 0
    X = embed([p for p, k in zip(prompts, keep, strict=True) if k])
    estimator.fit(X, target[keep], sample_weight=weight[keep])
    return estimator


def predict(estimator: Any, X: npt.ArrayLike) -> FloatArray:
    """Router scores in chunks (kNN compares every test row with every stored point)."""
    X = np.asarray(X, dtype=np.float32)
    parts = [
        np.asarray(estimator.predict(X[i : i + _PREDICT_CHUNK]), dtype=np.float64)
        for i in range(0, len(X), _PREDICT_CHUNK)
    ]
    return np.concatenate(parts) if parts else np.empty(0)


def fit_and_score(
    kind: str,
    labels: LabelSet,
    embed: Embedder,
    X_test: npt.ArrayLike,
    *,
    seed: int = 0,
    params: Mapping[str, Any] | None = None,
) -> FloatArray:
    """Fit on the labels, score the test embeddings."""
    return predict(fit_router(kind, labels, embed, seed=seed, params=params), X_test)


# --------------------------------------------------------------------------- numbers


def metric_row(report: RouterReport) -> dict[str, float]:
    """CPT(50%), CPT(80%), APGR in percent (NaN when the strong model is not better)."""
    row = report.as_percent()
    return {"CPT50": row["CPT(50%)"], "CPT80": row["CPT(80%)"], "APGR": row["APGR"]}


def summarise(rows: Sequence[Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """Mean and standard deviation (ddof 0) of each metric over runs (e.g. seeded draws)."""
    keys = list(rows[0]) if rows else []
    return {
        k: {
            "mean": float(np.mean([r[k] for r in rows])),
            "std": float(np.std([r[k] for r in rows])),
            "n": len(rows),
        }
        for k in keys
    }


def fmt(value: float | Mapping[str, float] | None, digits: int = 1) -> str:
    """``41.9`` or ``41.9 ± 1.2`` (a :func:`summarise` entry); ``–`` for missing / NaN."""
    if value is None:
        return "–"
    if isinstance(value, Mapping):
        mean, std = value["mean"], value["std"]
        if np.isnan(mean):
            return "–"
        return f"{mean:.{digits}f} ± {std:.{digits}f}"
    return "–" if np.isnan(value) else f"{value:.{digits}f}"


# --------------------------------------------------------------------------- report files


@dataclass
class ReportFiles:
    """Writes one report: ``<stem>.md`` with the regeneration header, ``<stem>.json``, PNGs.

    A hand-written ``<stem>.notes.md`` beside it (the interpretation) is appended to the
    generated body, so that regenerating the numbers keeps the prose.
    """

    out_dir: Path
    stem: str
    module: str
    argv: Sequence[str]
    data_dir: Path
    seeds: str
    started: float = field(default_factory=time.monotonic)

    def command(self) -> str:
        return shlex.join(["python", "-m", self.module, *self.argv])

    def header(self, title: str, data_files: Sequence[str]) -> str:
        minutes = (time.monotonic() - self.started) / 60
        lines = [
            f"# {title}",
            "",
            "Regenerate (from the repository root, the data directory beside it):",
            "",
            "```",
            self.command(),
            "```",
            "",
            "- Data files (SHA-256, first 12 hex digits):",
        ]
        for name in data_files:
            path = self.data_dir / name
            digest = sha256_of(path)[:12] if path.exists() else "missing"
            lines.append(f"  - `{name}` ({digest})")
        lines += [
            f"- Seeds: {self.seeds}",
            f"- Run time: {minutes:.1f} min on {platform.machine()} CPU, 1 torch thread, "
            f"embeddings from the cache (`~/.cache/dars-router/embeddings`); "
            f"Python {sys.version.split()[0]}",
            "",
        ]
        return "\n".join(lines)

    def write(
        self,
        title: str,
        data_files: Sequence[str],
        body: str,
        numbers: Mapping[str, Any],
        *,
        json_name: str | None = None,
    ) -> dict[str, Path]:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        markdown = self.out_dir / f"{self.stem}.md"
        notes = self.out_dir / f"{self.stem}.notes.md"
        if notes.exists():  # the hand-written reading of the numbers, kept across reruns
            body = body.rstrip() + "\n\n" + notes.read_text(encoding="utf-8")
        markdown.write_text(self.header(title, data_files) + "\n" + body.rstrip() + "\n")
        numbers_path = self.out_dir / (json_name or f"{self.stem}.json")
        numbers_path.write_text(json.dumps(_jsonable(numbers), indent=1, sort_keys=False) + "\n")
        return {"markdown": markdown, "json": numbers_path}

    def png(self, suffix: str) -> Path:
        return self.out_dir / f"{self.stem}-{suffix}.png"


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float | np.floating):
        number = float(value)
        return None if np.isnan(number) else round(number, 4)
    if isinstance(value, np.integer):
        return int(value)
    return value


def base_parser(description: str, default_out: str) -> argparse.ArgumentParser:
    """Arguments every driver takes: data directory, output directory, seed, cache, threads."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data", default="../shared/data", help="observation files directory")
    parser.add_argument("--out", default=default_out, help="where the report files go")
    parser.add_argument("--seed", type=int, default=0, help="base seed (folds, routers)")
    parser.add_argument("--cache-dir", help="embedding cache (default ~/.cache/dars-router/...)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    return parser


def say(message: str) -> None:
    """Progress on stderr, with a wall-clock stamp."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
