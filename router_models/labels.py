"""Router labels for a (weak/edge, strong/cloud) model pair: three supervision schemes.

Every scheme returns one :class:`LabelSet`: per query a target in [0, 1] (how much the strong
model is needed), a weight >= 0, and both models' capability statistics, so the schemes can be
compared on the same queries.

- ``single-shot``: one observation per query-model pair, drawn with a seed; win -> 1,
  loss -> 0, tie -> ``tie_target`` (0 by default: the strong model is not needed).
- ``dars``: the capability distribution of all observations (DARS). Soft target
  P(U_strong > U_weak) with U = mu_q - lambda*mu_c - beta*sigma_q; weight = how sure it is.
- ``semantic-entropy``: responses clustered into meaning classes; the model with clearly
  lower semantic entropy wins (Confidence-Driven Router, eq. 2-4).

``docs/observations.md`` describes each scheme's choices (ties, costs, priors, weights).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from router_models.answers import answer_kind, extract_answer
from router_models.observations import Observation, PathLike, group_by_query

if TYPE_CHECKING:
    from sentence_transformers import CrossEncoder

__all__ = [
    "DEFAULT_BETA",
    "DEFAULT_LAMBDA",
    "DEFAULT_TAU",
    "SCHEMES",
    "ClusterMode",
    "LabelSet",
    "ModelStats",
    "NliEquivalence",
    "QueryPair",
    "capability_stats",
    "choose_pair",
    "cluster_responses",
    "concat_label_sets",
    "dars_labels",
    "load_labels",
    "make_labels",
    "model_means",
    "multi_pair_labels",
    "pair_observations",
    "prob_beta_greater",
    "semantic_entropy",
    "semantic_entropy_labels",
    "single_shot_labels",
]

FloatArray = npt.NDArray[np.float64]
SCHEMES: tuple[str, ...] = ("single-shot", "dars", "semantic-entropy")
DEFAULT_LAMBDA = 0.05
DEFAULT_BETA = 0.2
DEFAULT_TAU = 0.1
ClusterMode = Literal["auto", "answer", "embedding", "nli", "text", "score"]
EmbedFn = Callable[[list[str]], Any]


# --------------------------------------------------------------------------- data types


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
        return ModelStats(*(np.asarray(getattr(self, name))[index] for name in _STAT_FIELDS))


_STAT_FIELDS = ("mu", "sigma", "count", "var_input", "var_output", "cost")


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
                row[side] = {name: getattr(stats, name)[i].item() for name in _STAT_FIELDS}
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
            columns = {name: [row[side][name] for row in rows] for name in _STAT_FIELDS}
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


# --------------------------------------------------------------------------- shared steps


def _sorted(rows: Iterable[Observation]) -> tuple[Observation, ...]:
    return tuple(sorted(rows, key=lambda obs: (obs.variant_id, obs.sample_id)))


def pair_observations(
    observations: Iterable[Observation], weak: str, strong: str
) -> list[QueryPair]:
    """The queries that both models answered, in first-seen order, rows sorted by variant/sample."""
    if weak == strong:
        raise ValueError("weak and strong model must differ")
    pairs = []
    for query_id, by_model in group_by_query(observations).items():
        if weak in by_model and strong in by_model:
            first = by_model[weak][0]
            pairs.append(
                QueryPair(
                    query_id=query_id,
                    dataset=first.dataset,
                    prompt=first.prompt,
                    weak=_sorted(by_model[weak]),
                    strong=_sorted(by_model[strong]),
                )
            )
    if not pairs:
        raise ValueError(f"no query has observations of both {weak!r} and {strong!r}")
    return pairs


def capability_stats(rows: Sequence[Observation]) -> tuple[float, float, int, float, float]:
    """(mu, sigma, count, var_input, var_output) of one query-model pair's scores.

    Population moments over all observations; var_input is the variance of the per-variant
    means (each weighted by its number of decodes), var_output the mean within-variant
    variance, so var_input + var_output = sigma**2 exactly.
    """
    scores = np.asarray([obs.score for obs in rows], dtype=np.float64)
    variants = np.asarray([obs.variant_id for obs in rows])
    mu = float(scores.mean())
    _, inverse = np.unique(variants, return_inverse=True)
    sums = np.bincount(inverse, weights=scores)
    counts = np.bincount(inverse)
    variant_mean = (sums / counts)[inverse]
    var_input = float(np.mean((variant_mean - mu) ** 2))
    var_output = float(np.mean((scores - variant_mean) ** 2))
    sigma = math.sqrt(max(var_input + var_output, 0.0))
    return mu, sigma, len(rows), var_input, var_output


def _mean_costs(
    pairs: Sequence[QueryPair], weak: str, strong: str, costs: Mapping[str, float] | None
) -> tuple[FloatArray, FloatArray, str]:
    """Per-query mean cost of each model, normalised per dataset, and where it came from.

    Explicit ``costs`` (price per call, per model) win; else observed ``cost`` when every row
    has one; else the cost rank (weak 0, strong 1). Each dataset's costs are divided by its
    largest mean cost, so lambda means the same thing on every dataset.
    """
    if costs is not None:
        missing = [m for m in (weak, strong) if m not in costs]
        if missing:
            raise ValueError(f"costs given but missing for model(s) {missing}")
        c_weak = np.full(len(pairs), float(costs[weak]))
        c_strong = np.full(len(pairs), float(costs[strong]))
        source = "prices"
    elif all(obs.cost is not None for p in pairs for obs in (*p.weak, *p.strong)):
        c_weak = np.asarray([np.mean([o.cost for o in p.weak]) for p in pairs], dtype=np.float64)
        c_strong = np.asarray(
            [np.mean([o.cost for o in p.strong]) for p in pairs], dtype=np.float64
        )
        source = "observed"
    else:
        c_weak, c_strong = np.zeros(len(pairs)), np.ones(len(pairs))
        source = "rank"
    datasets = np.asarray([p.dataset for p in pairs])
    for name in np.unique(datasets):
        rows = datasets == name
        top = max(float(c_weak[rows].max()), float(c_strong[rows].max()))
        if top > 0:
            c_weak[rows] /= top
            c_strong[rows] /= top
    return c_weak, c_strong, source


def _stats(
    pairs: Sequence[QueryPair], costs: Mapping[str, float] | None
) -> tuple[ModelStats, ModelStats, str]:
    weak_name, strong_name = pairs[0].weak[0].model, pairs[0].strong[0].model
    c_weak, c_strong, source = _mean_costs(pairs, str(weak_name), str(strong_name), costs)
    result = []
    for side, cost in (("weak", c_weak), ("strong", c_strong)):
        table = np.asarray([capability_stats(getattr(p, side)) for p in pairs], dtype=np.float64)
        result.append(
            ModelStats(
                mu=table[:, 0],
                sigma=table[:, 1],
                count=table[:, 2].astype(np.int64),
                var_input=table[:, 3],
                var_output=table[:, 4],
                cost=cost,
            )
        )
    return result[0], result[1], source


def _label_set(
    scheme: str,
    pairs: Sequence[QueryPair],
    target: FloatArray,
    weight: FloatArray,
    stats: tuple[ModelStats, ModelStats],
    params: dict[str, Any],
    extra: dict[str, FloatArray] | None = None,
) -> LabelSet:
    return LabelSet(
        scheme=scheme,
        weak_model=str(pairs[0].weak[0].model),
        strong_model=str(pairs[0].strong[0].model),
        query_ids=tuple(p.query_id for p in pairs),
        prompts=tuple(p.prompt for p in pairs),
        datasets=tuple(p.dataset for p in pairs),
        target=np.asarray(target, dtype=np.float64),
        weight=np.asarray(weight, dtype=np.float64),
        weak=stats[0],
        strong=stats[1],
        params=params,
        extra=extra or {},
    )


# --------------------------------------------------------------------------- single-shot


def _draw(seed: int, query_id: str, model: str, n: int) -> int:
    """A seeded index in [0, n) that depends only on (seed, query, model): stable under
    reordering or extending the data, unlike one generator consumed in file order."""
    digest = hashlib.blake2b(f"{seed}\0{query_id}\0{model}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % n


def single_shot_labels(
    observations: Iterable[Observation],
    weak: str,
    strong: str,
    *,
    seed: int = 0,
    tie_target: float = 0.0,
    tie_margin: float = 0.0,
    costs: Mapping[str, float] | None = None,
) -> LabelSet:
    """One observation per query-model pair, drawn with ``seed``: win 1, loss 0, tie ``tie_target``.

    A tie is ``|score_strong - score_weak| <= tie_margin``; the default ``tie_target=0``
    reads a tie as "the weak model is enough" (both right: no need to pay; both wrong: paying
    does not help). Every query has weight 1.
    """
    if not 0.0 <= tie_target <= 1.0:
        raise ValueError("tie_target must be within [0, 1]")
    pairs = pair_observations(observations, weak, strong)
    target = np.empty(len(pairs))
    for i, pair in enumerate(pairs):
        s_weak = pair.weak[_draw(seed, pair.query_id, weak, len(pair.weak))].score
        s_strong = pair.strong[_draw(seed, pair.query_id, strong, len(pair.strong))].score
        diff = float(s_strong or 0.0) - float(s_weak or 0.0)
        target[i] = tie_target if abs(diff) <= tie_margin else float(diff > 0)
    weak_stats, strong_stats, cost_source = _stats(pairs, costs)
    params = {
        "seed": seed,
        "tie_target": tie_target,
        "tie_margin": tie_margin,
        "cost_source": cost_source,
    }
    return _label_set(
        "single-shot", pairs, target, np.ones(len(pairs)), (weak_stats, strong_stats), params
    )


# --------------------------------------------------------------------------- dars


def prob_beta_greater(
    a_strong: npt.ArrayLike,
    b_strong: npt.ArrayLike,
    a_weak: npt.ArrayLike,
    b_weak: npt.ArrayLike,
    shift: npt.ArrayLike = 0.0,
    *,
    grid: int = 4096,
) -> FloatArray:
    """P(X_strong - X_weak > shift) for independent Beta variables, by numeric integration.

    Sums ``P(X_weak in bin) * P(X_strong > bin centre + shift)`` over ``grid`` equal bins of
    [0, 1] (error O(1/grid), deterministic); unique parameter rows are computed once.
    """
    from scipy.special import betainc

    params = np.column_stack(
        np.broadcast_arrays(
            *(np.asarray(v, dtype=np.float64) for v in (a_strong, b_strong, a_weak, b_weak, shift))
        )
    )
    unique, inverse = np.unique(params, axis=0, return_inverse=True)
    edges = np.linspace(0.0, 1.0, grid + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    out = np.empty(len(unique))
    for start in range(0, len(unique), 256):
        chunk = unique[start : start + 256]
        a_s, b_s, a_w, b_w, d = (chunk[:, j : j + 1] for j in range(5))
        mass_weak = np.diff(betainc(a_w, b_w, edges[None, :]), axis=1)
        point = np.clip(centres[None, :] + d, 0.0, 1.0)
        above = 1.0 - betainc(a_s, b_s, point)
        out[start : start + 256] = np.sum(mass_weak * above, axis=1)
    return np.clip(out[np.asarray(inverse).reshape(-1)], 0.0, 1.0)


def _posterior(
    rows: Sequence[Observation], prior: tuple[float, float], binary: bool
) -> tuple[float, float, float, float]:
    """(a, b, mean, variance) of the posterior over a model's expected score on one query.

    0/1 scores: Beta(prior_a + successes, prior_b + failures). Fractional scores: a Gaussian
    with the moments of the scores plus the prior as pseudo-observations (prior_a ones,
    prior_b zeros); a and b are then NaN.
    """
    scores = np.asarray([obs.score for obs in rows], dtype=np.float64)
    a0, b0 = prior
    if binary:
        a, b = a0 + scores.sum(), b0 + len(scores) - scores.sum()
        return a, b, a / (a + b), a * b / ((a + b) ** 2 * (a + b + 1))
    n = len(scores) + a0 + b0
    mean = (scores.sum() + a0) / n
    second = (np.sum(scores**2) + a0) / n
    return math.nan, math.nan, mean, max(second - mean**2, 0.0) / n


def dars_labels(
    observations: Iterable[Observation],
    weak: str,
    strong: str,
    *,
    lam: float = DEFAULT_LAMBDA,
    beta: float = DEFAULT_BETA,
    costs: Mapping[str, float] | None = None,
    prior: tuple[float, float] = (1.0, 1.0),
    weighting: Literal["inverse-variance", "confidence", "uniform"] = "inverse-variance",
    grid: int = 4096,
) -> LabelSet:
    """Distribution-aware labels: target = P(U_strong > U_weak), U = mu_q - lam*mu_c - beta*sigma_q.

    The expected qualities get posteriors (Beta for 0/1 scores, Gaussian otherwise, prior
    ``prior`` as pseudo-counts); cost and risk enter as a fixed shift
    ``lam*(c_s - c_w) + beta*(sigma_s - sigma_w)``, so the target is
    P(q_strong - q_weak > shift). ``weighting``: ``inverse-variance`` = 1 / Var(q_s - q_w)
    scaled to mean 1 (more observations -> more weight); ``confidence`` = |2p - 1|;
    ``uniform`` = 1. Deterministic (numeric integration), no seed.
    """
    pairs = pair_observations(observations, weak, strong)
    weak_stats, strong_stats, cost_source = _stats(pairs, costs)
    shift = lam * (strong_stats.cost - weak_stats.cost) + beta * (
        strong_stats.sigma - weak_stats.sigma
    )
    binary = np.asarray(
        [all(obs.score in (0.0, 1.0) for obs in (*p.weak, *p.strong)) for p in pairs]
    )
    post = np.asarray(
        [
            (*_posterior(p.weak, prior, bool(b)), *_posterior(p.strong, prior, bool(b)))
            for p, b in zip(pairs, binary, strict=True)
        ],
        dtype=np.float64,
    ).reshape(len(pairs), 8)
    a_w, b_w, m_w, v_w, a_s, b_s, m_s, v_s = post.T
    target = np.empty(len(pairs))
    if binary.any():
        target[binary] = prob_beta_greater(
            a_s[binary], b_s[binary], a_w[binary], b_w[binary], shift[binary], grid=grid
        )
    if (~binary).any():
        from scipy.special import ndtr

        gap = m_s[~binary] - m_w[~binary] - shift[~binary]
        spread = np.sqrt(v_s[~binary] + v_w[~binary])
        target[~binary] = ndtr(gap / np.maximum(spread, 1e-12))
    variance = v_s + v_w
    if weighting == "inverse-variance":
        weight = 1.0 / np.maximum(variance, 1e-12)
        weight /= weight.mean()
    elif weighting == "confidence":
        weight = np.abs(2.0 * target - 1.0)
    elif weighting == "uniform":
        weight = np.ones(len(pairs))
    else:
        raise ValueError(f"unknown weighting {weighting!r}")
    params: dict[str, Any] = {
        "lambda": lam,
        "beta": beta,
        "prior": list(prior),
        "weighting": weighting,
        "cost_source": cost_source,
    }
    extra = {"shift": shift, "posterior_var": variance}
    return _label_set("dars", pairs, target, weight, (weak_stats, strong_stats), params, extra)


# --------------------------------------------------------------------------- semantic entropy


class NliEquivalence:
    """Bidirectional entailment with a local NLI cross-encoder (Kuhn et al.; the paper's DeBERTa).

    ``model_path`` is a local directory (nothing is downloaded). Two responses mean the same
    when each entails the other.
    """

    def __init__(self, model_path: PathLike, *, device: str = "cpu") -> None:
        self.model_path = Path(model_path)
        self.device = device
        self._model: CrossEncoder | None = None
        self._entail = -1

    def _load(self) -> CrossEncoder:
        if self._model is None:
            from sentence_transformers import CrossEncoder

            if not self.model_path.is_dir():
                raise FileNotFoundError(f"NLI model directory not found: {self.model_path}")
            model = CrossEncoder(str(self.model_path), device=self.device, local_files_only=True)
            labels = {str(v).lower(): int(k) for k, v in model.config.id2label.items()}
            if "entailment" not in labels:
                raise ValueError(f"NLI model has no 'entailment' label: {labels}")
            self._entail = labels["entailment"]
            self._model = model
        return self._model

    def __call__(self, first: str, second: str) -> bool:
        logits = np.asarray(self._load().predict([(first, second), (second, first)]))
        return bool(np.all(logits.argmax(axis=1) == self._entail))


def _greedy_clusters(items: Sequence[str], same: Callable[[int, int], bool]) -> list[int]:
    """The paper's clustering: an item joins the first cluster whose representative (first
    member) it is equivalent to, else starts a new cluster."""
    representatives: list[int] = []
    labels = []
    for i in range(len(items)):
        for cluster, rep in enumerate(representatives):
            if same(i, rep):
                labels.append(cluster)
                break
        else:
            labels.append(len(representatives))
            representatives.append(i)
    return labels


def cluster_responses(
    rows: Sequence[Observation],
    *,
    mode: ClusterMode = "auto",
    embed: EmbedFn | None = None,
    similarity: float = 0.9,
    nli: Callable[[str, str], bool] | None = None,
) -> list[str]:
    """A meaning-class label per observation.

    ``answer``: the extracted final answer (number or option letter; unparsable responses
    are singletons); ``embedding``: greedy clusters at cosine >= ``similarity``; ``nli``:
    greedy bidirectional entailment; ``text``: identical whitespace-normalised text;
    ``score``: the score itself. ``auto`` = ``answer`` when the dataset has a final answer,
    else ``nli`` / ``embedding`` when given, else ``text``. Rows without a response always
    fall back to their score as the class.
    """
    if mode == "auto":
        kind = answer_kind(rows[0].dataset) if rows else None
        if kind is not None:
            mode = "answer"
        elif nli is not None:
            mode = "nli"
        elif embed is not None:
            mode = "embedding"
        else:
            mode = "text"
    labels = [f"score:{float(obs.score or 0.0)}" for obs in rows]
    with_text = [i for i, obs in enumerate(rows) if obs.response]
    texts = [str(rows[i].response) for i in with_text]
    if mode == "score" or not texts:
        return labels
    if mode == "answer":
        kind = answer_kind(rows[0].dataset) or "number"
        for i, text in zip(with_text, texts, strict=True):
            found = extract_answer(text, kind)
            labels[i] = f"answer:{found}" if found is not None else f"unparsed:{i}"
        return labels
    if mode == "text":
        groups = [" ".join(t.split()).lower() for t in texts]
    elif mode == "embedding":
        if embed is None:
            raise ValueError("cluster mode 'embedding' needs an embed function")
        vectors = np.asarray(embed(texts), dtype=np.float64)
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        sims = vectors @ vectors.T
        groups = [str(c) for c in _greedy_clusters(texts, lambda i, j: sims[i, j] >= similarity)]
    elif mode == "nli":
        if nli is None:
            raise ValueError("cluster mode 'nli' needs an NLI equivalence, e.g. NliEquivalence")
        groups = [str(c) for c in _greedy_clusters(texts, lambda i, j: nli(texts[i], texts[j]))]
    else:
        raise ValueError(f"unknown cluster mode {mode!r}")
    for i, group in zip(with_text, groups, strict=True):
        labels[i] = f"{mode}:{group}"
    return labels


def semantic_entropy(
    labels: Sequence[str], estimator: Literal["paper", "discrete"] = "paper"
) -> float:
    """Semantic entropy of one query-model pair from its meaning-class labels.

    ``paper``: eq. 2 of the Confidence-Driven Router, -(1/|C|) * sum_i log p(C_i);
    ``discrete``: -sum_i p(C_i) log p(C_i). Cluster probabilities are class frequencies
    (no token likelihoods are available in observation data).
    """
    _, counts = np.unique(np.asarray(labels), return_counts=True)
    p = counts / counts.sum()
    if estimator == "paper":
        return float(-np.mean(np.log(p)))
    if estimator == "discrete":
        return float(-np.sum(p * np.log(p)))
    raise ValueError(f"unknown estimator {estimator!r}")


def _se_delta(se_strong: float, se_weak: float) -> float:
    """Normalised SE difference (eq. 3); inf when only the strong model is certain."""
    if se_strong > 0:
        return abs(se_strong - se_weak) / se_strong
    return math.inf if se_weak > 0 else 0.0


def semantic_entropy_labels(
    observations: Iterable[Observation],
    weak: str,
    strong: str,
    *,
    tau: float = DEFAULT_TAU,
    mode: ClusterMode = "auto",
    embed: EmbedFn | None = None,
    similarity: float = 0.9,
    nli: Callable[[str, str], bool] | None = None,
    estimator: Literal["paper", "discrete"] = "paper",
    tie_target: float = 0.0,
    costs: Mapping[str, float] | None = None,
) -> LabelSet:
    """Semantic-entropy preference labels (Confidence-Driven Router, eq. 3-4).

    delta = |SE_s - SE_w| / SE_s; if delta > tau the model with lower SE wins (strong -> 1,
    weak -> 0), else a tie (``tie_target``). SE_s = 0 gives delta = inf unless SE_w = 0 too
    (then a tie). Weight 1 for every query.
    """
    pairs = pair_observations(observations, weak, strong)
    options: dict[str, Any] = {"mode": mode, "embed": embed, "similarity": similarity, "nli": nli}
    target = np.empty(len(pairs))
    entropies = np.empty((len(pairs), 2))
    for i, pair in enumerate(pairs):
        se_w = semantic_entropy(cluster_responses(pair.weak, **options), estimator)
        se_s = semantic_entropy(cluster_responses(pair.strong, **options), estimator)
        entropies[i] = se_w, se_s
        target[i] = float(se_s < se_w) if _se_delta(se_s, se_w) > tau else tie_target
    weak_stats, strong_stats, cost_source = _stats(pairs, costs)
    params: dict[str, Any] = {
        "tau": tau,
        "mode": mode,
        "similarity": similarity,
        "estimator": estimator,
        "tie_target": tie_target,
        "cost_source": cost_source,
    }
    extra = {"se_weak": entropies[:, 0], "se_strong": entropies[:, 1]}
    stats = (weak_stats, strong_stats)
    weight = np.ones(len(pairs))
    return _label_set("semantic-entropy", pairs, target, weight, stats, params, extra)


# --------------------------------------------------------------------------- dispatch, pairs


def make_labels(
    observations: Iterable[Observation], weak: str, strong: str, scheme: str, **params: Any
) -> LabelSet:
    """Labels by scheme name (one of :data:`SCHEMES`); ``params`` go to the scheme's function."""
    builders: dict[str, Callable[..., LabelSet]] = {
        "single-shot": single_shot_labels,
        "dars": dars_labels,
        "semantic-entropy": semantic_entropy_labels,
    }
    if scheme not in builders:
        raise ValueError(f"unknown label scheme {scheme!r}; choose from {list(SCHEMES)}")
    return builders[scheme](observations, weak, strong, **params)


def model_means(observations: Iterable[Observation]) -> dict[str, float]:
    """Mean quality per model: the mean over queries of its per-query mean score."""
    per_model: dict[str, list[float]] = {}
    for by_model in group_by_query(observations).values():
        for model, rows in by_model.items():
            per_model.setdefault(model, []).append(float(np.mean([o.score for o in rows])))
    return {model: float(np.mean(values)) for model, values in sorted(per_model.items())}


def choose_pair(
    observations: Iterable[Observation], weak: str | None = None, strong: str | None = None
) -> tuple[str, str]:
    """(weak, strong): the given names, or the lowest / highest mean-quality model."""
    means = model_means(observations)
    for name in (weak, strong):
        if name is not None and name not in means:
            raise ValueError(f"model {name!r} not in the observations; have {sorted(means)}")
    ranked = sorted(means, key=lambda m: means[m])
    if weak is None:
        weak = next(m for m in ranked if m != strong)
    if strong is None:
        strong = next(m for m in reversed(ranked) if m != weak)
    return weak, strong


def concat_label_sets(sets: Sequence[LabelSet]) -> LabelSet:
    """Stack label sets of one scheme (e.g. several model pairs); a query may repeat.

    Model names of the result are the distinct names joined with ``+``.
    """
    if not sets:
        raise ValueError("no label sets to concatenate")
    if len({s.scheme for s in sets}) != 1:
        raise ValueError("label sets of different schemes cannot be stacked")

    def names(attr: str) -> str:
        return "+".join(dict.fromkeys(getattr(s, attr) for s in sets))

    def stats(side: str) -> ModelStats:
        return ModelStats(
            *(np.concatenate([getattr(getattr(s, side), n) for s in sets]) for n in _STAT_FIELDS)
        )

    return LabelSet(
        scheme=sets[0].scheme,
        weak_model=names("weak_model"),
        strong_model=names("strong_model"),
        query_ids=tuple(q for s in sets for q in s.query_ids),
        prompts=tuple(p for s in sets for p in s.prompts),
        datasets=tuple(d for s in sets for d in s.datasets),
        target=np.concatenate([s.target for s in sets]),
        weight=np.concatenate([s.weight for s in sets]),
        weak=stats("weak"),
        strong=stats("strong"),
        params={"pairs": [[s.weak_model, s.strong_model] for s in sets], **sets[0].params},
        extra={
            name: np.concatenate([s.extra[name] for s in sets])
            for name in sets[0].extra
            if all(name in s.extra for s in sets)
        },
    )


def multi_pair_labels(
    observations: Iterable[Observation],
    scheme: str,
    pairs: Sequence[tuple[str, str]] | None = None,
    **params: Any,
) -> LabelSet:
    """Labels from several (weak, strong) pairs stacked, for training data whose models
    differ from the deployed pair. ``pairs=None`` takes every pair whose second model has
    the higher mean quality."""
    rows = list(observations)
    if pairs is None:
        means = model_means(rows)
        ranked = sorted(means, key=lambda m: means[m])
        pairs = [
            (a, b) for i, a in enumerate(ranked) for b in ranked[i + 1 :] if means[a] < means[b]
        ]
    return concat_label_sets([make_labels(rows, w, s, scheme, **params) for w, s in pairs])
