"""Labels over K models: per (query, model) cell the mean quality, its spread and its count.

The N-way routers learn each model's expected quality per query, so their supervision is a
``[n_queries, K]`` table rather than one target per model pair. Cells are computed from all
observations of the (query, model): DARS's capability distribution summarised as mean
``mu``, population standard deviation ``sigma`` and observation count. A model that never
answered a query leaves a **missing cell** (NaN, count 0); routers mask it out of their loss.

Schemes:

- ``dars``: every observation of the cell (all prompt variants and decodes).
- ``single-shot``: one observation per cell, drawn with the seed exactly as the two-model
  ``single-shot`` labels draw it (a hash of seed, query, model); spread 0, count 1.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from router_models.labels.base import FloatArray
from router_models.labels.capability import capability_stats
from router_models.labels.single_shot import draw_index
from router_models.observations import Observation, group_by_query

__all__ = ["QUALITY_SCHEMES", "QualityLabels", "quality_labels"]

QUALITY_SCHEMES: tuple[str, ...] = ("dars", "single-shot")


@dataclass(frozen=True)
class QualityLabels:
    """Per-query, per-model supervision of a K-model router (arrays ``[n, K]``).

    ``mean`` and ``std`` are NaN and ``count`` is 0 in a missing cell. ``response_chars`` is
    the mean length of the cell's response texts (NaN where no row has one): the token
    estimate of the price table.
    """

    scheme: str
    models: tuple[str, ...]
    query_ids: tuple[str, ...]
    prompts: tuple[str, ...]
    datasets: tuple[str, ...]
    mean: FloatArray
    std: FloatArray
    count: npt.NDArray[np.int64]
    response_chars: FloatArray
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        shape = (len(self.query_ids), len(self.models))
        arrays = (self.mean, self.std, self.count, self.response_chars)
        if any(np.shape(a) != shape for a in arrays):
            raise ValueError(f"every cell array must have shape {shape}")
        if not len(self.prompts) == len(self.datasets) == shape[0]:
            raise ValueError("prompts and datasets must align with query_ids")

    def __len__(self) -> int:
        return len(self.query_ids)

    @property
    def mask(self) -> npt.NDArray[np.bool_]:
        """Observed cells."""
        out: npt.NDArray[np.bool_] = self.count > 0
        return out

    def cell_weights(self) -> FloatArray:
        """Per-cell training weight: the observation count, rescaled to mean 1 over observed
        cells (0 where missing). Weighting a mean's soft-target cross-entropy by its count
        equals summing the cross-entropies of the single observations."""
        observed = self.count[self.mask]
        scale = float(observed.mean()) if observed.size else 1.0
        out: FloatArray = self.count.astype(np.float64) / scale
        return out

    def take(self, index: npt.ArrayLike) -> QualityLabels:
        """The labels of the queries at ``index`` (in that order)."""
        rows = np.asarray(index, dtype=np.intp)
        return QualityLabels(
            scheme=self.scheme,
            models=self.models,
            query_ids=tuple(self.query_ids[i] for i in rows),
            prompts=tuple(self.prompts[i] for i in rows),
            datasets=tuple(self.datasets[i] for i in rows),
            mean=self.mean[rows],
            std=self.std[rows],
            count=self.count[rows],
            response_chars=self.response_chars[rows],
            params=dict(self.params),
        )

    def complete(self) -> npt.NDArray[np.bool_]:
        """Queries where every model has a cell (evaluation needs the full row)."""
        out: npt.NDArray[np.bool_] = np.all(self.mask, axis=1)
        return out


def _cell(rows: Sequence[Observation], scheme: str, seed: int) -> tuple[float, float, int]:
    if scheme == "single-shot":
        ordered = sorted(rows, key=lambda obs: (obs.variant_id, obs.sample_id))
        drawn = ordered[draw_index(seed, rows[0].query_id, str(rows[0].model), len(ordered))]
        return float(drawn.score or 0.0), 0.0, 1
    mu, sigma, count, _, _ = capability_stats(rows)
    return mu, sigma, count


def quality_labels(
    observations: Iterable[Observation],
    models: Sequence[str] | None = None,
    *,
    scheme: str = "dars",
    seed: int = 0,
) -> QualityLabels:
    """The ``[n, K]`` cells of every query that at least one of ``models`` answered.

    ``models`` fixes the column order (default: sorted names of all scored models). Queries
    keep their first-seen order.
    """
    if scheme not in QUALITY_SCHEMES:
        raise ValueError(f"scheme must be one of {QUALITY_SCHEMES}, not {scheme!r}")
    grouped = group_by_query(observations)
    names = (
        tuple(models)
        if models is not None
        else tuple(sorted({m for by_model in grouped.values() for m in by_model}))
    )
    if not names or len(set(names)) != len(names):
        raise ValueError("models must be a non-empty list of distinct names")
    column = {name: k for k, name in enumerate(names)}
    ids, prompts, datasets, cells, chars = [], [], [], [], []
    for query_id, by_model in grouped.items():
        present = [m for m in by_model if m in column]
        if not present:
            continue
        first = by_model[present[0]][0]
        ids.append(query_id)
        prompts.append(first.prompt)
        datasets.append(first.dataset)
        row = np.full((len(names), 3), np.nan)
        length = np.full(len(names), np.nan)
        row[:, 2] = 0
        for model in present:
            row[column[model]] = _cell(by_model[model], scheme, seed)
            texts = [len(o.response) for o in by_model[model] if o.response is not None]
            if texts:
                length[column[model]] = float(np.mean(texts))
        cells.append(row)
        chars.append(length)
    if not ids:
        raise ValueError(f"no observation of any of the models {list(names)}")
    table = np.asarray(cells, dtype=np.float64)
    return QualityLabels(
        scheme=scheme,
        models=names,
        query_ids=tuple(ids),
        prompts=tuple(prompts),
        datasets=tuple(datasets),
        mean=table[:, :, 0],
        std=table[:, :, 1],
        count=table[:, :, 2].astype(np.int64),
        response_chars=np.asarray(chars, dtype=np.float64),
        params={"seed": seed} if scheme == "single-shot" else {},
    )
