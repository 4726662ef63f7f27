"""Router files: metadata, checks before writing, and what onnxruntime reads back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from router_models.contract import (
    CALIBRATION_PROBS,
    DEFAULT_EMBEDDING_MODEL_ID,
    INPUT_NAME,
    META_CALIBRATION,
    META_DEFAULT_THRESHOLD,
    META_EMBEDDING_DIM,
    META_MODELS,
    META_ROUTER,
    OUTPUT_NAME,
    Calibration,
)
from router_models.estimators import KNNRouter
from router_models.estimators.base import unit_rows
from router_models.export_onnx import (
    REQUIRED_METADATA,
    RouterExportError,
    build_metadata,
    load_router_scores,
    read_metadata,
    router_session,
    save_router,
)
from router_models.registry import ROUTERS, accepts_query_length, make_router

torch.set_num_threads(1)

DIM = 12


def _metadata(router: str = "knn", dim: int = DIM, **overrides: Any) -> dict[str, str]:
    params: dict[str, Any] = {
        "embedding_model_id": DEFAULT_EMBEDDING_MODEL_ID,
        "embedding_dim": dim,
        "label_scheme": "dars",
        "default_threshold": 0.42,
        "calibration": Calibration.from_scores(np.linspace(0.1, 0.9, 50)),
        "models": {"edge": "qwen2.5-0.5b", "cloud": "gpt-4o"},
        "router": router,
        **overrides,
    }
    return build_metadata(**params)


@pytest.fixture(scope="module")
def training() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = unit_rows(rng.standard_normal((120, DIM))).astype(np.float32)
    return X, (X[:, 0] > 0).astype(np.float64)


def test_build_metadata_is_complete_and_stringly(training: Any) -> None:
    meta = _metadata()
    assert set(meta) == set(REQUIRED_METADATA)
    assert all(isinstance(v, str) for v in meta.values())
    assert meta[META_EMBEDDING_DIM] == str(DIM)
    assert float(meta[META_DEFAULT_THRESHOLD]) == 0.42
    assert json.loads(meta[META_MODELS]) == {"cloud": "gpt-4o", "edge": "qwen2.5-0.5b"}
    assert Calibration.from_json(meta[META_CALIBRATION]).probs == CALIBRATION_PROBS


@pytest.mark.parametrize(
    "override",
    [
        {"label_scheme": "majority-vote"},
        {"default_threshold": 1.5},
        {"router": "bert"},
        {"models": {"edge": "a"}},
        {"embedding_dim": 0},
        {"embedding_model_id": ""},
    ],
)
def test_build_metadata_rejects_bad_values(override: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        _metadata(**override)


@pytest.mark.parametrize("kind", sorted(ROUTERS))
def test_saved_router_round_trips(kind: str, training: Any, tmp_path: Path) -> None:
    X, y = training
    lengths = np.arange(len(X), dtype=np.float64) * 7.0
    extra: dict[str, Any] = {"query_length": lengths} if accepts_query_length(ROUTERS[kind]) else {}
    est = make_router(kind, random_state=0).fit(X, y, **extra)
    meta = _metadata(router=kind)
    path = save_router(est.to_onnx(meta), tmp_path / "routers" / f"{kind}.onnx")
    assert path.is_file()
    assert [p.name for p in tmp_path.joinpath("routers").iterdir()] == [f"{kind}.onnx"]
    # What the service sees: onnxruntime's metadata map and scores equal to predict.
    assert read_metadata(path) == meta
    assert router_session(path).get_modelmeta().custom_metadata_map[META_ROUTER] == kind
    for n in (1, len(X)):
        batch, length = X[:n], {k: v[:n] for k, v in extra.items()}
        np.testing.assert_allclose(
            load_router_scores(path, batch, **length), est.predict(batch, **length), atol=1e-5
        )


def _raw_graph(nodes: list[onnx.NodeProto], output: str = OUTPUT_NAME) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "raw",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", DIM])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["batch"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in _metadata().items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    return model


def _mean_node(output: str = OUTPUT_NAME, op: str = "ReduceMean") -> onnx.NodeProto:
    return helper.make_node(op, [INPUT_NAME], [output], axes=[1], keepdims=0)


def test_raw_valid_graph_is_accepted(tmp_path: Path) -> None:
    # Mean of a unit vector's entries lies in [-1, 1]; Sigmoid maps it into (0, 1).
    nodes = [_mean_node("m"), helper.make_node("Sigmoid", ["m"], [OUTPUT_NAME])]
    assert save_router(_raw_graph(nodes), tmp_path / "ok.onnx").is_file()


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (_raw_graph([helper.make_node("Sigmoid", ["missing"], [OUTPUT_NAME])]), "checker"),
        (_raw_graph([_mean_node(op="NoSuchOp")]), "checker"),
        (_raw_graph([_mean_node("probability")], output="probability"), "one output"),
        (_raw_graph([_mean_node(op="ReduceL1")]), r"\[0, 1\]|within"),
    ],
    ids=["dangling-input", "unknown-op", "wrong-output-name", "scores-out-of-range"],
)
def test_broken_graph_is_rejected_and_not_written(
    model: onnx.ModelProto, message: str, tmp_path: Path
) -> None:
    target = tmp_path / "router.onnx"
    target.write_bytes(b"previous router")
    with pytest.raises(RouterExportError, match=message):
        save_router(model, target)
    assert target.read_bytes() == b"previous router"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["router.onnx"]


def test_runtime_failure_is_mapped(tmp_path: Path) -> None:
    # Valid to the checker, but a batch of 3 cannot be reshaped to 4 scores: only running it tells.
    four = helper.make_tensor("four", TensorProto.INT64, [1], [4])
    model = _raw_graph(
        [
            _mean_node("m"),
            helper.make_node("Sigmoid", ["m"], ["p"]),
            helper.make_node("Reshape", ["p", "four"], [OUTPUT_NAME]),
        ]
    )
    model.graph.initializer.append(four)
    with pytest.raises(RouterExportError, match="onnxruntime could not run"):
        save_router(model, tmp_path / "r.onnx")
    assert not any(tmp_path.iterdir())


def test_metadata_is_required_and_consistent(training: Any, tmp_path: Path) -> None:
    X, y = training
    est = KNNRouter().fit(X, y)
    with pytest.raises(RouterExportError, match="lacks"):
        save_router(est.to_onnx(), tmp_path / "a.onnx")
    with pytest.raises(RouterExportError, match=META_EMBEDDING_DIM):
        save_router(est.to_onnx(_metadata(dim=384)), tmp_path / "b.onnx")
    broken = {**_metadata(), META_CALIBRATION: json.dumps({"probs": [0.5]})}
    with pytest.raises(RouterExportError, match=META_CALIBRATION):
        save_router(est.to_onnx(broken), tmp_path / "c.onnx")
    assert save_router(est.to_onnx(), tmp_path / "d.onnx", require_metadata=False).is_file()
    assert not (tmp_path / "a.onnx").exists()


def test_real_embeddings_route_math_to_cloud(encoder: Any, tmp_path: Path) -> None:
    """End to end on the real encoder: texts in, a saved router out, same scores in ORT."""
    hard = [
        "Prove that there are infinitely many primes congruent to 3 mod 4.",
        "Solve the integral of x^2 * exp(-x) from 0 to infinity step by step.",
        "Find all real solutions of x^4 - 5x^2 + 4 = 0 and justify each step.",
        "A train leaves at 3pm at 60 km/h; another at 4pm at 80 km/h. When do they meet?",
        "Compute the eigenvalues of the matrix [[2, 1], [1, 2]] and explain.",
        "How many ways can 8 rooks be placed on a chessboard so none attack each other?",
    ]
    easy = [
        "Hi there, how are you today?",
        "Say hello to my friend Anna.",
        "What is the capital of France?",
        "Thanks a lot, have a nice day!",
        "What colour is the sky on a clear day?",
        "Good morning! Tell me a short greeting.",
    ]
    X = encoder.encode(hard + easy, normalize_embeddings=True, convert_to_numpy=True)
    y = np.array([1.0] * len(hard) + [0.0] * len(easy))
    est = KNNRouter(n_neighbors=3).fit(X, y)
    path = save_router(est.to_onnx(_metadata(dim=X.shape[1])), tmp_path / "knn.onnx")
    queries = encoder.encode(
        ["Prove that the square root of 2 is irrational.", "Hello! How is it going?"],
        normalize_embeddings=True,
        convert_to_numpy=True,
    )
    scores = load_router_scores(path, queries)
    np.testing.assert_allclose(scores, est.predict(queries), atol=1e-5)
    assert scores[0] > 0.5 > scores[1]
