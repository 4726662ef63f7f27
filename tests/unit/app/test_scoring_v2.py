"""Contract v2 files in the service: a trainer-built K-model router loads, predicts what the
estimator predicts, and is checked by the contract's one validator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers.onnx_routers import random_unit_vectors
from helpers.quality_routers import make_quality_router

from app.scoring import RouterLoadError, RouterModel, Scorer, load_router_model
from router_models.contract import DEFAULT_EMBEDDING_MODEL_ID
from router_models.estimators import KNNQualityRouter
from router_models.export_onnx import build_quality_metadata, save_router

DIM = 384
MODELS = ["small", "medium", "large"]


def load(path: Path) -> RouterModel:
    return load_router_model(
        path,
        expected_embedding_model=DEFAULT_EMBEDDING_MODEL_ID,
        expected_dim=DIM,
        providers="cpu",
        intra_op_threads=1,
    )


@pytest.fixture(scope="module")
def knn() -> KNNQualityRouter:
    rng = np.random.default_rng(0)
    quality = rng.random((40, 3))
    quality[::4, 2] = np.nan  # missing cells, as in real label sets
    return KNNQualityRouter(n_neighbors=5).fit(random_unit_vectors(40, DIM, seed=1), quality)


def test_a_trainer_built_quality_router_serves_its_predictions(
    knn: KNNQualityRouter, tmp_path: Path
) -> None:
    meta = build_quality_metadata(
        embedding_model_id=DEFAULT_EMBEDDING_MODEL_ID,
        embedding_dim=DIM,
        label_scheme="dars",
        models=MODELS,
        router="knn_quality",
    )
    model = load(save_router(knn.to_onnx(meta), tmp_path / "knn.onnx"))
    vectors = random_unit_vectors(6, DIM, seed=2)

    assert model.decides_by_utility and not model.has_score
    assert model.model_ids == tuple(MODELS)
    assert model.calibration is None  # v2 files carry no two-model calibration
    np.testing.assert_allclose(model.quality(vectors), knn.predict(vectors), atol=1e-5)


async def test_the_scorer_predicts_one_row(tmp_path: Path) -> None:
    scorer = Scorer(load(make_quality_router(tmp_path / "q.onnx", (0.2, 0.5, 0.8), MODELS)))

    quality = await scorer.quality(random_unit_vectors(1, DIM)[0])

    np.testing.assert_allclose(quality, [0.2, 0.5, 0.8], atol=1e-5)


def test_a_reload_the_service_cannot_serve_is_refused_and_the_old_router_stays(
    tmp_path: Path,
) -> None:
    first = load(make_quality_router(tmp_path / "a.onnx", (0.2, 0.5, 0.8), MODELS))

    def refuse(model: RouterModel) -> None:
        raise RouterLoadError(f"no upstream for {model.model_ids[-1]}")

    scorer = Scorer(first, providers="cpu", intra_op_threads=1, accept=refuse)
    other = make_quality_router(tmp_path / "b.onnx", (0.2, 0.5), ["small", "gpt-5"])

    with pytest.raises(RouterLoadError, match="no upstream for gpt-5"):
        scorer.reload(other)
    assert scorer.model is first


def test_metadata_of_a_quality_file_is_checked_by_the_contract(tmp_path: Path) -> None:
    import onnx

    path = make_quality_router(tmp_path / "q.onnx", (0.2, 0.5, 0.8), MODELS)
    proto = onnx.load(str(path))
    for entry in proto.metadata_props:
        if entry.key == "dars.label_scheme":
            entry.value = "vibes"
    onnx.save(proto, str(path))

    with pytest.raises(RouterLoadError, match=r"breaks the contract: dars\.label_scheme must be"):
        load(path)


def test_a_quality_file_brings_its_calibration_rows_and_a_reload_picks_them_up(
    tmp_path: Path,
) -> None:
    rows = [[0.1, 0.5, 0.9], [0.3, 0.3, 0.4]]
    plain = load(make_quality_router(tmp_path / "a.onnx", (0.2, 0.5, 0.8), MODELS))
    scorer = Scorer(plain, providers="cpu", intra_op_threads=1)

    reloaded = scorer.reload(
        make_quality_router(tmp_path / "b.onnx", (0.2, 0.5, 0.8), MODELS, calibration=rows)
    )

    assert plain.quality_calibration is None
    assert reloaded.quality_calibration is not None
    np.testing.assert_allclose(reloaded.quality_calibration, rows)


def test_calibration_rows_of_another_k_are_refused_at_load(tmp_path: Path) -> None:
    import json

    import onnx

    path = make_quality_router(tmp_path / "q.onnx", (0.2, 0.5, 0.8), MODELS)
    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = "dars.quality_calibration", json.dumps({"quality": [[0.1, 0.2]]})
    onnx.save(proto, str(path))

    with pytest.raises(RouterLoadError, match="row 0 has 2 values but the router knows K=3"):
        load(path)
