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

For K models, :func:`quality_labels` gives per (query, model) cell the mean quality, its
spread and its observation count (missing cells allowed), under ``dars`` or ``single-shot``.

``docs/observations.md`` describes each scheme's choices (ties, costs, priors, weights).
"""

from router_models.labels.base import FloatArray as FloatArray
from router_models.labels.base import LabelSet, ModelPair, ModelStats, QueryPair, load_labels
from router_models.labels.capability import capability_stats, pair_observations
from router_models.labels.dars import DEFAULT_BETA, DEFAULT_LAMBDA, dars_labels, prob_beta_greater
from router_models.labels.entropy import (
    DEFAULT_TAU,
    ClusterMode,
    NliEquivalence,
    cluster_responses,
    semantic_entropy,
    semantic_entropy_labels,
)
from router_models.labels.entropy import EmbedFn as EmbedFn
from router_models.labels.pairs import (
    PAIR_MAPPINGS,
    SCHEMES,
    choose_pair,
    concat_label_sets,
    make_labels,
    model_means,
    model_pairs,
    multi_pair_labels,
)
from router_models.labels.quality import QUALITY_SCHEMES, QualityLabels, quality_labels
from router_models.labels.single_shot import single_shot_labels

__all__ = [
    "DEFAULT_BETA",
    "DEFAULT_LAMBDA",
    "DEFAULT_TAU",
    "PAIR_MAPPINGS",
    "QUALITY_SCHEMES",
    "SCHEMES",
    "ClusterMode",
    "LabelSet",
    "ModelPair",
    "ModelStats",
    "NliEquivalence",
    "QualityLabels",
    "QueryPair",
    "capability_stats",
    "choose_pair",
    "cluster_responses",
    "concat_label_sets",
    "dars_labels",
    "load_labels",
    "make_labels",
    "model_means",
    "model_pairs",
    "multi_pair_labels",
    "pair_observations",
    "prob_beta_greater",
    "quality_labels",
    "semantic_entropy",
    "semantic_entropy_labels",
    "single_shot_labels",
]
