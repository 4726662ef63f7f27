"""The label data types: per-query capability statistics and the labels of one model pair."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from router_models.observations import Observation, PathLike

__all__ = [
    "STAT_FIELDS",
    "FloatArray",
    "LabelSet",
    "ModelPair",
    "ModelStats",
    "QueryPair",
    "load_labels",
]

FloatArray = npt.NDArray[np.float64]
ModelPair = tuple[str, str]
"""(weak, strong) model names."""


@dataclass(frozen=True)
class ModelStats:
    """One model's capability distribution per query (arrays aligned with the queries).

    ``var_input`` (between prompt variants) + ``var_output`` (between decodes within a
    variant) = ``sigma**2``: the law of total variance over the observations. ``cost`` is the
    mean cost normalised per dataset (see :func:`dars_labels`).
    """

    mu: FloatArray
    sigma: FloatArray
    count: npt.NDArray[np.int64]
    var_input: FloatArray
    var_output: FloatArray
    cost: FloatArray

    def take(self, index: npt.NDArray[np.intp]) -> ModelStats:
        return ModelStats(*(np.asarray(getattr(self, name))[index] for name in STAT_FIELDS))


STAT_FIELDS = ("mu", "sigma", "count", "var_input", "var_output", "cost")


@dataclass(frozen=True)
class LabelSet:
    """Per-query router supervision for one model pair (or several, see :func:`concat_label_sets`).

    ``target[i]`` is the probability that the strong (cloud) model is needed for query ``i``;
    ``weight[i] >= 0`` is how much the router should trust it. ``extra`` holds further
    per-query arrays a scheme computes (``shift`` for dars, ``se_weak`` / ``se_strong`` for
    semantic entropy).

    A stacked set of several pairs records per row which (weak, strong) pair it compares
    (``row_pairs``) and the pair it stands in for at prediction time (``score_pair``), so
    routers that fit model pairs natively (MF, SW-ranking) can learn from every pair and still
    score one. Both are ``None`` for a single-pair set: every row is (``weak_model``,
    ``strong_model``).
    """

    scheme: str
    weak_model: str
    strong_model: str
    query_ids: tuple[str, ...]
    prompts: tuple[str, ...]
    datasets: tuple[str, ...]
    target: FloatArray
    weight: FloatArray
    weak: ModelStats
    strong: ModelStats
    params: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, FloatArray] = field(default_factory=dict)
    row_pairs: tuple[ModelPair, ...] | None = None
    score_pair: ModelPair | None = None

    def __len__(self) -> int:
        return len(self.query_ids)

    def pair_of_rows(self) -> tuple[ModelPair, ...]:
        """The (weak, strong) pair of every row (the one pair repeated for a single-pair set)."""
        if self.row_pairs is not None:
            return self.row_pairs
        return ((self.weak_model, self.strong_model),) * len(self)

    def distinct_pairs(self) -> tuple[ModelPair, ...]:
        """The (weak, strong) pairs in order of first appearance."""
        if self.row_pairs is None:
            return ((self.weak_model, self.strong_model),)
        return tuple(dict.fromkeys(self.row_pairs))

    def models(self) -> tuple[str, ...]:
        """Every model of the pairs, in order of first appearance (weak before strong)."""
        return tuple(dict.fromkeys(m for pair in self.distinct_pairs() for m in pair))

    def scored_pair(self) -> ModelPair:
        """The (weak, strong) pair a router trained on these labels scores."""
        if self.score_pair is not None:
            return self.score_pair
        return self.pair_of_rows()[0] if len(self) else (self.weak_model, self.strong_model)

    def pair_indices(self) -> npt.NDArray[np.intp]:
        """Per row (strong, weak) indices into :meth:`models`: the ``pairs`` argument of a
        pair-native router's ``fit`` (row ``i``: the strong model is needed w.p. ``target[i]``)."""
        index = {m: i for i, m in enumerate(self.models())}
        out = [(index[strong], index[weak]) for weak, strong in self.pair_of_rows()]
        return np.asarray(out, dtype=np.intp).reshape(-1, 2)

    def take(self, index: npt.ArrayLike) -> LabelSet:
        """The rows at ``index`` (integer indices or a boolean mask)."""
        rows = np.arange(len(self))[np.asarray(index)]
        return LabelSet(
            scheme=self.scheme,
            weak_model=self.weak_model,
            strong_model=self.strong_model,
            query_ids=tuple(self.query_ids[i] for i in rows),
            prompts=tuple(self.prompts[i] for i in rows),
            datasets=tuple(self.datasets[i] for i in rows),
            target=self.target[rows],
            weight=self.weight[rows],
            weak=self.weak.take(rows),
            strong=self.strong.take(rows),
            params=dict(self.params),
            extra={name: values[rows] for name, values in self.extra.items()},
            row_pairs=None if self.row_pairs is None else tuple(self.row_pairs[i] for i in rows),
            score_pair=self.score_pair,
        )

    def to_dict(self) -> dict[str, Any]:
        rows = []
        for i, query_id in enumerate(self.query_ids):
            row: dict[str, Any] = {
                "query_id": query_id,
                "dataset": self.datasets[i],
                "prompt": self.prompts[i],
                "target": float(self.target[i]),
                "weight": float(self.weight[i]),
            }
            for side, stats in (("weak", self.weak), ("strong", self.strong)):
                row[side] = {name: getattr(stats, name)[i].item() for name in STAT_FIELDS}
            row["extra"] = {name: float(values[i]) for name, values in self.extra.items()}
            if self.row_pairs is not None:
                row["pair"] = list(self.row_pairs[i])
            rows.append(row)
        out: dict[str, Any] = {
            "scheme": self.scheme,
            "weak_model": self.weak_model,
            "strong_model": self.strong_model,
            "params": self.params,
        }
        if self.score_pair is not None:
            out["score_pair"] = list(self.score_pair)
        return {**out, "rows": rows}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LabelSet:
        rows = data["rows"]

        def stats(side: str) -> ModelStats:
            columns = {name: [row[side][name] for row in rows] for name in STAT_FIELDS}
            arrays: dict[str, Any] = {
                name: np.asarray(values, dtype=np.int64 if name == "count" else np.float64)
                for name, values in columns.items()
            }
            return ModelStats(**arrays)

        def pair(value: Sequence[Any]) -> ModelPair:
            weak, strong = value
            return str(weak), str(strong)

        has_pairs = bool(rows) and "pair" in rows[0]
        return cls(
            scheme=str(data["scheme"]),
            weak_model=str(data["weak_model"]),
            strong_model=str(data["strong_model"]),
            query_ids=tuple(str(row["query_id"]) for row in rows),
            prompts=tuple(str(row["prompt"]) for row in rows),
            datasets=tuple(str(row["dataset"]) for row in rows),
            target=np.asarray([row["target"] for row in rows], dtype=np.float64),
            weight=np.asarray([row["weight"] for row in rows], dtype=np.float64),
            weak=stats("weak"),
            strong=stats("strong"),
            params=dict(data.get("params", {})),
            extra={
                name: np.asarray([row["extra"][name] for row in rows], dtype=np.float64)
                for name in (rows[0].get("extra", {}) if rows else {})
            },
            row_pairs=tuple(pair(row["pair"]) for row in rows) if has_pairs else None,
            score_pair=pair(data["score_pair"]) if data.get("score_pair") else None,
        )

    def save(self, path: PathLike) -> None:
        """Write as one JSON document (meta + one object per query)."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(self.to_dict(), ensure_ascii=False), encoding="utf-8")


def load_labels(path: PathLike) -> LabelSet:
    """Read a label file written by :meth:`LabelSet.save`."""
    try:
        return LabelSet.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: not a label file ({exc})") from exc


@dataclass(frozen=True)
class QueryPair:
    """All observations of the weak and the strong model on one query."""

    query_id: str
    dataset: str
    prompt: str
    weak: tuple[Observation, ...]
    strong: tuple[Observation, ...]
