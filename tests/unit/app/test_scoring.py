"""Router loading and scoring on real ONNX files built in the tests."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from helpers.onnx_routers import linear_scores, make_linear_router, random_unit_vectors

from app.errors import RouterUnavailable
from app.metrics import Metrics
from app.scoring import RouterLoadError, RouterModel, Scorer, load_router_model, resolve_providers
from router_models.contract import (
    DEFAULT_EMBEDDING_MODEL_ID,
    META_CALIBRATION,
    META_DEFAULT_THRESHOLD,
    META_EMBEDDING_DIM,
    META_EMBEDDING_MODEL,
    META_LABEL_SCHEME,
    META_MODELS,
    META_ROUTER,
)

DIM = 384
WEIGHTS = np.linspace(-2.0, 2.0, DIM, dtype=np.float32)


def load(path: Path, **kwargs: object) -> RouterModel:
    options: dict[str, object] = {
        "expected_embedding_model": DEFAULT_EMBEDDING_MODEL_ID,
        "expected_dim": DIM,
        "intra_op_threads": 1,
    }
    options.update(kwargs)
    return load_router_model(path, **options)  # type: ignore[arg-type]


@pytest.fixture
def router_path(tmp_path: Path) -> Path:
    return make_linear_router(tmp_path / "router.onnx", weights=WEIGHTS, bias=0.25)


def test_load_reads_the_contract_metadata(router_path: Path) -> None:
    model = load(router_path)

    assert model.path == router_path
    assert model.embedding_model == DEFAULT_EMBEDDING_MODEL_ID
    assert model.embedding_dim == DIM
    assert model.label_scheme == "dars"
    assert model.default_threshold == 0.5
    assert model.models == {"edge": "edge", "cloud": "cloud"}
    assert model.router_kind == "linear"
    assert model.calibration is not None
    assert len(model.calibration.probs) == 101
    assert model.metadata[META_EMBEDDING_DIM] == str(DIM)


def test_score_matches_the_linear_formula(router_path: Path) -> None:
    model = load(router_path)
    vectors = random_unit_vectors(7, DIM, seed=3)

    scores = model.score(vectors)

    assert scores.shape == (7,)
    np.testing.assert_allclose(scores, linear_scores(vectors, WEIGHTS, 0.25), rtol=1e-5)


def test_score_rejects_a_wrong_shape(router_path: Path) -> None:
    with pytest.raises(ValueError, match="shape"):
        load(router_path).score(np.zeros((2, DIM + 1), dtype=np.float32))


def test_provider_actually_used_is_reported_on_cpu(router_path: Path) -> None:
    model = load(router_path, providers="cpu")

    assert model.provider == "CPUExecutionProvider"
    assert model.provider == model.session.get_providers()[0]


def test_auto_provider_reports_what_the_session_runs_on(router_path: Path) -> None:
    model = load(router_path, providers="auto")

    assert model.provider == model.session.get_providers()[0]
    assert model.provider in resolve_providers("auto")


def test_resolve_providers_auto_and_aliases() -> None:
    auto = resolve_providers("auto")
    assert auto[-1] == "CPUExecutionProvider"
    assert ("CUDAExecutionProvider" in auto) == (
        "CUDAExecutionProvider" in ort.get_available_providers()
    )
    assert resolve_providers(" CPU ") == ["CPUExecutionProvider"]
    assert resolve_providers("CPUExecutionProvider") == ["CPUExecutionProvider"]


@pytest.mark.parametrize("providers", ["NoSuchExecutionProvider", "", " , "])
def test_unknown_or_empty_providers_are_refused(router_path: Path, providers: str) -> None:
    with pytest.raises(RouterLoadError, match="provider"):
        load(router_path, providers=providers)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RouterLoadError, match="not found"):
        load(tmp_path / "absent.onnx")


def test_not_an_onnx_file(tmp_path: Path) -> None:
    path = tmp_path / "router.onnx"
    path.write_text("this is not a protobuf")

    with pytest.raises(RouterLoadError, match="not a loadable ONNX model"):
        load(path)


def test_truncated_onnx_file(router_path: Path) -> None:
    data = router_path.read_bytes()
    router_path.write_bytes(data[: len(data) // 2])

    with pytest.raises(RouterLoadError, match="not a loadable ONNX model"):
        load(router_path)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        # Names and shapes: the contract's validator (router_models.contract), the trainer's too.
        ({"input_name": "features"}, r"breaks the contract: .*has inputs \['features'\]"),
        (
            {"length_weight": 0.01, "length_input_name": "n_tokens"},
            r"has inputs \['embedding', 'n_tokens'\]",
        ),
        ({"output_name": "prob"}, r"to one output 'score' and/or 'quality'.*outputs \['prob'\]"),
        ({"dim": 8}, "has dimension 8"),
        ({"embedding_model": "intfloat/e5-small"}, "trained on embeddings of 'intfloat/e5-small'"),
        ({"metadata": {META_EMBEDDING_DIM: "768"}}, "embedding_dim=768"),
        ({"metadata": {META_EMBEDDING_DIM: "three"}}, "not an integer"),
        ({"metadata": {META_EMBEDDING_MODEL: None}}, "lacks 'dars.embedding_model'"),
        ({"metadata": {META_DEFAULT_THRESHOLD: None}}, "lacks 'dars.default_threshold'"),
        ({"metadata": {META_DEFAULT_THRESHOLD: "high"}}, "not a number"),
        ({"metadata": {META_DEFAULT_THRESHOLD: "1.5"}}, r"must be in \[0, 1\]"),
        ({"metadata": {META_DEFAULT_THRESHOLD: "nan"}}, r"must be in \[0, 1\]"),
        ({"metadata": {META_CALIBRATION: "{not json"}}, "calibration' is malformed"),
        ({"metadata": {META_CALIBRATION: '{"probs": [0, 1]}'}}, "calibration' is malformed"),
        (
            {"metadata": {META_CALIBRATION: '{"probs": [0, 0.5], "quantiles": [0.1]}'}},
            "calibration' is malformed",
        ),
        (
            {"metadata": {META_CALIBRATION: '{"probs": [0, 1], "quantiles": [0.1, NaN]}'}},
            "non-finite",
        ),
        ({"metadata": {META_MODELS: "edge=a"}}, "models' is not valid: dars.models is not JSON"),
        # Contract v2 reads an ordered list too; a score router still knows exactly two models.
        ({"metadata": {META_MODELS: '["a", "b", "c"]'}}, "knows exactly two models"),
        ({"metadata": {META_MODELS: '{"edge": "a"}'}}, "must name an 'edge' and a 'cloud'"),
    ],
)
def test_broken_routers_are_refused_with_a_clear_message(
    tmp_path: Path, options: dict[str, object], message: str
) -> None:
    path = make_linear_router(tmp_path / "broken.onnx", **options)  # type: ignore[arg-type]

    with pytest.raises(RouterLoadError, match=message):
        load(path)


LENGTH_WEIGHT = 0.02


@pytest.fixture
def length_router_path(tmp_path: Path) -> Path:
    return make_linear_router(
        tmp_path / "length.onnx", weights=WEIGHTS, bias=-3.0, length_weight=LENGTH_WEIGHT
    )


def test_two_input_router_scores_with_the_query_length(length_router_path: Path) -> None:
    model = load(length_router_path)
    vectors = random_unit_vectors(5, DIM, seed=4)
    lengths = np.array([0.0, 10.0, 100.0, 300.0, 4000.0], dtype=np.float32)

    scores = model.score(vectors, lengths)

    assert model.uses_query_length
    expected = linear_scores(
        vectors, WEIGHTS, -3.0, query_length=lengths, length_weight=LENGTH_WEIGHT
    )
    np.testing.assert_allclose(scores, expected, rtol=1e-5)


async def test_long_text_scores_higher_than_short_text(length_router_path: Path) -> None:
    scorer = Scorer(load(length_router_path), intra_op_threads=1)
    vector = random_unit_vectors(1, DIM, seed=8)[0]
    short, long = "What is 2 + 2?", "Solve this word problem step by step. " * 10

    short_score = await scorer.score(vector, query_length=len(short))
    long_score = await scorer.score(vector, query_length=len(long))

    assert short_score < 0.5 <= long_score
    assert long_score == pytest.approx(
        float(
            linear_scores(
                vector[None, :],
                WEIGHTS,
                -3.0,
                query_length=np.array([len(long)]),
                length_weight=LENGTH_WEIGHT,
            )[0]
        ),
        rel=1e-5,
    )


def test_two_input_router_needs_the_length(length_router_path: Path) -> None:
    model = load(length_router_path)
    vectors = random_unit_vectors(2, DIM)

    with pytest.raises(ValueError, match="needs 'query_length'"):
        model.score(vectors)
    with pytest.raises(ValueError, match="2 query lengths"):
        model.score(vectors, [1.0, 2.0, 3.0])


def test_embedding_only_router_ignores_a_length(router_path: Path) -> None:
    model = load(router_path)
    vectors = random_unit_vectors(3, DIM, seed=6)

    assert not model.uses_query_length
    np.testing.assert_array_equal(model.score(vectors, [1.0, 500.0, 4000.0]), model.score(vectors))


def test_optional_metadata_may_be_absent(tmp_path: Path) -> None:
    absent = {key: None for key in (META_CALIBRATION, META_MODELS, META_LABEL_SCHEME, META_ROUTER)}
    path = make_linear_router(tmp_path / "bare.onnx", metadata=absent)

    model = load(path)

    assert model.calibration is None
    assert model.models == {}
    assert model.label_scheme == "unknown"
    assert model.router_kind == "unknown"


def test_scores_outside_the_unit_interval_are_refused(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    # score = embedding @ w with w = 4: a unit vector along axis 0 scores 4.
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["embedding", "w"], ["z"]),
            helper.make_node("Squeeze", ["z", "axes"], ["score"]),
        ],
        "unbounded",
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", DIM])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch"])],
        initializer=[
            helper.make_tensor("w", TensorProto.FLOAT, [DIM, 1], [4.0] * DIM),
            helper.make_tensor("axes", TensorProto.INT64, [1], [1]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(
        model,
        {
            META_EMBEDDING_MODEL: DEFAULT_EMBEDDING_MODEL_ID,
            META_EMBEDDING_DIM: str(DIM),
            META_DEFAULT_THRESHOLD: "0.5",
        },
    )
    path = tmp_path / "unbounded.onnx"
    onnx.save(model, str(path))

    with pytest.raises(RouterLoadError, match=r"\[0, 1\]"):
        load(path)


async def test_scorer_scores_off_the_loop_and_observes_metrics(router_path: Path) -> None:
    metrics = Metrics()
    scorer = Scorer(load(router_path), metrics=metrics, intra_op_threads=1)
    vector = random_unit_vectors(1, DIM, seed=5)[0]

    score = await scorer.score(vector)

    assert isinstance(score, float)
    assert score == pytest.approx(float(linear_scores(vector[None, :], WEIGHTS, 0.25)[0]), 1e-5)
    registry = metrics.registry
    assert registry.get_sample_value("dars_router_score_count") == 1
    assert registry.get_sample_value("dars_latency_seconds_count", {"stage": "scoring"}) == 1
    info = registry.get_sample_value(
        "dars_router_model_info",
        {
            "path": str(router_path),
            "provider": scorer.model.provider,
            "embedding_model": DEFAULT_EMBEDDING_MODEL_ID,
            "label_scheme": "dars",
            "router": "linear",
            "default_threshold": "0.5",
        },
    )
    assert info == 1


async def test_scorer_serves_concurrent_calls(router_path: Path) -> None:
    scorer = Scorer(load(router_path), intra_op_threads=1)
    vectors = random_unit_vectors(16, DIM, seed=9)

    scores = await asyncio.gather(*(scorer.score(v) for v in vectors))

    np.testing.assert_allclose(scores, linear_scores(vectors, WEIGHTS, 0.25), rtol=1e-5)


async def test_reload_swaps_the_model(tmp_path: Path, router_path: Path) -> None:
    metrics = Metrics()
    scorer = Scorer(load(router_path), metrics=metrics, intra_op_threads=1)
    new_path = make_linear_router(
        tmp_path / "new.onnx", bias=-10.0, default_threshold=0.3, label_scheme="single-shot"
    )

    model = scorer.reload(new_path)

    assert scorer.model is model
    assert model.path == new_path
    assert model.default_threshold == 0.3
    assert await scorer.score(random_unit_vectors(1, DIM)[0]) < 0.001
    registry = metrics.registry
    assert registry.get_sample_value("dars_router_reloads_total", {"result": "ok"}) == 1
    labels = {**model.info(), "label_scheme": "single-shot"}
    assert registry.get_sample_value("dars_router_model_info", labels) == 1


@pytest.mark.parametrize(
    "breakage",
    ["corrupt", "missing", "other_embedding_model", "other_dim", "bad_calibration"],
)
async def test_reload_of_a_broken_file_keeps_the_old_model(
    tmp_path: Path, router_path: Path, breakage: str
) -> None:
    metrics = Metrics()
    scorer = Scorer(load(router_path), metrics=metrics, intra_op_threads=1)
    old = scorer.model
    vector = random_unit_vectors(1, DIM, seed=1)[0]
    before = await scorer.score(vector)
    bad = tmp_path / "bad.onnx"
    if breakage == "corrupt":
        bad.write_bytes(b"\x08\x07garbage" * 100)
    elif breakage == "other_embedding_model":
        make_linear_router(bad, embedding_model="BAAI/bge-small-en-v1.5")
    elif breakage == "other_dim":
        make_linear_router(bad, dim=768)
    elif breakage == "bad_calibration":
        make_linear_router(bad, metadata={META_CALIBRATION: json.dumps({"probs": "x"})})

    with pytest.raises(RouterLoadError):
        scorer.reload(bad)

    assert scorer.model is old
    assert await scorer.score(vector) == before
    registry = metrics.registry
    assert registry.get_sample_value("dars_router_reloads_total", {"result": "rejected"}) == 1
    assert registry.get_sample_value("dars_router_reloads_total", {"result": "ok"}) == 0


def test_a_failing_session_maps_to_router_unavailable(router_path: Path) -> None:
    model = load(router_path)
    # A non-finite input makes the sigmoid return NaN, which is not a usable score.
    vectors = np.full((1, DIM), np.nan, dtype=np.float32)

    with pytest.raises(RouterUnavailable, match="malformed scores"):
        model.score(vectors)


def _cuda_usable(path: Path) -> bool:
    """Whether onnxruntime can really run on CUDA here (library present and a GPU visible)."""
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False
    if not os.path.exists("/dev/nvidia0") and not os.environ.get("CUDA_VISIBLE_DEVICES"):
        return False
    ort.set_default_logger_severity(4)
    try:
        session = ort.InferenceSession(str(path), providers=["CUDAExecutionProvider"])
    except Exception:
        return False
    finally:
        ort.set_default_logger_severity(2)
    return bool(session.get_providers()[0] == "CUDAExecutionProvider")


@pytest.mark.gpu
def test_auto_uses_cuda_when_available_and_scores_like_the_cpu(router_path: Path) -> None:
    if not _cuda_usable(router_path):
        pytest.skip("no usable CUDA for onnxruntime on this machine")
    vectors = random_unit_vectors(32, DIM, seed=2)

    gpu = load(router_path, providers="auto")
    cpu = load(router_path, providers="cpu")

    assert gpu.provider == "CUDAExecutionProvider"
    np.testing.assert_allclose(gpu.score(vectors), cpu.score(vectors), rtol=1e-4, atol=1e-6)
