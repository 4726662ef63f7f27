"""Router estimators: scikit-learn regressors of P(strong model needed) that export to ONNX."""

from router_models.estimators.base import RouterMixin
from router_models.estimators.knn import KNNRouter
from router_models.estimators.length_aware import LengthAwareRouter
from router_models.estimators.matrix_factorization import MatrixFactorizationRouter
from router_models.estimators.mlp import MLPRouter
from router_models.estimators.sw_ranking import SWRankingRouter

__all__ = [
    "KNNRouter",
    "LengthAwareRouter",
    "MLPRouter",
    "MatrixFactorizationRouter",
    "RouterMixin",
    "SWRankingRouter",
]
