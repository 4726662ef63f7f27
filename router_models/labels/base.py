"""The label data types: per-query capability statistics and the labels of one model pair."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from router_models.observations import Observation, PathLike

__all__ = ["STAT_FIELDS", "FloatArray", "LabelSet", "ModelStats", "QueryPair", "load_labels"]

FloatArray = npt.NDArray[np.float64]


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

    def __len__(self) -> int:
        return len(self.query_ids)

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
            rows.append(row)
        return {
            "scheme": self.scheme,
            "weak_model": self.weak_model,
            "strong_model": self.strong_model,
            "params": self.params,
            "rows": rows,
        }

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
        )

    def save(self, path: PathLike) -> None:
        """Write as one JSON document (meta + one object per query)."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(self.to_dict(), ensure_ascii=False), encoding="utf-8")


def load_labels(path: PathLike) -> LabelSet:
    """Read a label file written by :meth:`LabelSet.save`."""
    try:
        return LabelSet.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a label file ({exc})") from exc


@dataclass(frozen=True)
class QueryPair:
    """All observations of the weak and the strong model on one query."""

    query_id: str
    dataset: str
    prompt: str
    weak: tuple[Observation, ...]
    strong: tuple[Observation, ...]
