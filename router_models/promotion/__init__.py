"""The promotion gate and the rollback rule of the live learning loop (issue 9), as a library.

- :mod:`~router_models.promotion.scoring`: one way to score a router, whether it is an ONNX
  file the service loads, an open session or a fitted estimator.
- :mod:`~router_models.promotion.gate`: a candidate replaces the serving router only when its
  APGR on held-out queries (never trained on) beats the serving router's by a stated margin
  and a paired bootstrap lower bound of the gain is above 0
  (:mod:`~router_models.promotion.bootstrap`).
- :mod:`~router_models.promotion.gate_quality`: the same for K-model routers, by AIQ, on the
  decisions of :mod:`~router_models.promotion.choices`.
- :mod:`~router_models.promotion.rollback`: after a promotion, roll back when live quality on a
  route drops by more than a threshold, with enough observations to tell a drop from noise.
- :mod:`~router_models.promotion.records`: the typed, JSON-serialisable decision records.

Everything is pure (no clock, no files written); only ONNX routers are read, via
``router_models.export_onnx``.
"""

from router_models.promotion.bootstrap import Bound, paired_bootstrap
from router_models.promotion.choices import onnx_models, route_choices
from router_models.promotion.gate import GatePolicy, decide, gate, heldout_digest
from router_models.promotion.gate_quality import QualitySlice, gate_quality
from router_models.promotion.records import (
    GateDecision,
    QualityMetrics,
    RollbackDecision,
    RouteCheck,
    RouteQuality,
    RouterMetrics,
)
from router_models.promotion.rollback import RollbackPolicy, check_route, rollback_decision
from router_models.promotion.scoring import RouterLike, describe_router, router_scores

__all__ = [
    "Bound",
    "GateDecision",
    "GatePolicy",
    "QualityMetrics",
    "QualitySlice",
    "RollbackDecision",
    "RollbackPolicy",
    "RouteCheck",
    "RouteQuality",
    "RouterLike",
    "RouterMetrics",
    "check_route",
    "decide",
    "describe_router",
    "gate",
    "gate_quality",
    "heldout_digest",
    "onnx_models",
    "paired_bootstrap",
    "rollback_decision",
    "route_choices",
    "router_scores",
]
