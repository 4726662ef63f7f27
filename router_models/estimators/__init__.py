"""Router estimators that export to ONNX: two-model scorers and K-model quality predictors.

- Two-model routers (``score``): scikit-learn regressors of P(strong model needed).
- Quality routers (contract v2, ``quality``): predict each of K models' mean quality.
"""

from router_models.estimators.base import RouterMixin
from router_models.estimators.knn import KNNRouter
from router_models.estimators.length_aware import LengthAwareRouter
from router_models.estimators.matrix_factorization import MatrixFactorizationRouter
from router_models.estimators.mlp import MLPRouter
from router_models.estimators.quality_base import QualityRouterMixin
from router_models.estimators.quality_knn import KNNQualityRouter
from router_models.estimators.quality_mf import MFQualityRouter
from router_models.estimators.quality_mlp import MLPQualityRouter
from router_models.estimators.sw_ranking import SWRankingRouter

__all__ = [
    "KNNQualityRouter",
    "KNNRouter",
    "LengthAwareRouter",
    "MFQualityRouter",
    "MLPQualityRouter",
    "MLPRouter",
    "MatrixFactorizationRouter",
    "QualityRouterMixin",
    "RouterMixin",
    "SWRankingRouter",
]
