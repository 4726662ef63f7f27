"""Contract v2: K-model ``quality`` outputs, the ``dars.models`` list, one shared validator."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from router_models.contract import (
    INPUT_NAME,
    LENGTH_INPUT_NAME,
    META_CALIBRATION,
    META_DEFAULT_THRESHOLD,
    META_EMBEDDING_DIM,
    META_EMBEDDING_MODEL,
    META_LABEL_SCHEME,
    META_MODELS,
    META_QUALITY_CALIBRATION,
    META_ROUTER,
    OUTPUT_NAME,
    QUALITY_OUTPUT_NAME,
    QUALITY_STD_OUTPUT_NAME,
    Calibration,
    ContractError,
    TensorSpec,
    check_dry_run,
    check_router_signature,
    parse_models,
    parse_quality_calibration,
    tensor_specs_from_session,
)
from router_models.estimators import KNNQualityRouter
from router_models.export_onnx import (
    RouterExportError,
    build_quality_metadata,
    load_router_quality,
    read_metadata,
    router_session,
    save_router,
)

DIM = 8
MODELS = ["small", "medium", "large"]
_CALIBRATION = json.dumps({"probs": [0.0, 1.0], "quantiles": [0.1, 0.9]})


def _embedding(dim: int | None = DIM) -> TensorSpec:
    return TensorSpec(INPUT_NAME, "float", (None, dim))


def _quality(k: int | None = 3, name: str = QUALITY_OUTPUT_NAME) -> TensorSpec:
    return TensorSpec(name, "float", (None, k))


def _meta(models: object = MODELS, **overrides: str) -> dict[str, str]:
    meta = {
        META_EMBEDDING_MODEL: "enc",
        META_EMBEDDING_DIM: str(DIM),
        META_LABEL_SCHEME: "dars",
        META_MODELS: json.dumps(models),
        META_ROUTER: "knn_quality",
    }
    return {**meta, **overrides}


def test_a_k_model_signature_is_accepted() -> None:
    sig = check_router_signature(
        [_embedding()], [_quality(), _quality(name=QUALITY_STD_OUTPUT_NAME)], _meta()
    )
    assert sig.n_models == 3 and sig.models == tuple(MODELS)
    assert sig.has_quality and sig.has_quality_std and not sig.has_score
    assert not sig.uses_query_length and sig.embedding_dim == DIM


def test_both_models_forms_are_read() -> None:
    assert parse_models(json.dumps({"edge": "e", "cloud": "c"})) == ("e", "c")
    assert parse_models(json.dumps(["a", "b", "c"])) == ("a", "b", "c")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "not JSON"),
        (json.dumps({"edge": "e"}), "'edge' and a 'cloud'"),
        (json.dumps([]), "non-empty list"),
        (json.dumps(["a", ""]), "non-empty list"),
        (json.dumps(["a", "a"]), "repeats"),
        (json.dumps("a"), "JSON list or an edge/cloud object"),
    ],
)
def test_bad_models_metadata_is_refused(text: str, message: str) -> None:
    with pytest.raises(ContractError, match=message):
        parse_models(text)


@pytest.mark.parametrize(
    ("inputs", "outputs", "meta", "message"),
    [
        ([_embedding()], [_quality(k=4)], _meta(), "K=4 columns but dars.models names 3"),
        ([_embedding()], [_quality(k=None)], _meta(), r"\[batch, K\] with a fixed K"),
        (
            [_embedding()],
            [TensorSpec(QUALITY_OUTPUT_NAME, "float", (None,))],
            _meta(),
            r"\[batch, K\]",
        ),
        ([_embedding()], [TensorSpec(QUALITY_OUTPUT_NAME, "float", (2, 3))], _meta(), "dynamic"),
        ([_embedding()], [_quality(), _quality(2, QUALITY_STD_OUTPUT_NAME)], _meta(), "K=2"),
        ([_embedding()], [_quality(name=QUALITY_STD_OUTPUT_NAME)], _meta(), "one output"),
        ([_embedding()], [_quality(name="qualities")], _meta(), "one output"),
        ([_embedding(), _embedding()], [_quality()], _meta(), "one output"),
        ([_embedding(dim=None)], [_quality()], _meta(), "fixed dimension"),
        ([_embedding()], [_quality()], _meta(**{META_EMBEDDING_DIM: "384"}), META_EMBEDDING_DIM),
        ([_embedding()], [_quality()], _meta(**{META_LABEL_SCHEME: "vibes"}), "label_scheme"),
        ([_embedding()], [_quality()], {META_EMBEDDING_DIM: str(DIM)}, "lacks"),
        (
            [_embedding()],
            [_quality(), TensorSpec(OUTPUT_NAME, "float", (None,))],
            _meta(**{META_DEFAULT_THRESHOLD: "0.5", META_CALIBRATION: _CALIBRATION}),
            "exactly two models",
        ),
        (
            [_embedding()],
            [_quality(k=2), TensorSpec(OUTPUT_NAME, "float", (None,))],
            _meta(models=["a", "b"]),
            "lacks",  # a score output brings the two-model keys with it
        ),
    ],
    ids=[
        "k-mismatch",
        "k-not-fixed",
        "quality-1d",
        "fixed-batch",
        "std-k-differs",
        "std-without-quality",
        "unknown-output",
        "unknown-input",
        "dynamic-dim",
        "dim-mismatch",
        "bad-label-scheme",
        "missing-keys",
        "score-with-k3",
        "score-without-calibration",
    ],
)
def test_broken_signatures_are_refused(
    inputs: list[TensorSpec], outputs: list[TensorSpec], meta: dict[str, str], message: str
) -> None:
    with pytest.raises(ContractError, match=message):
        check_router_signature(inputs, outputs, meta)


def test_a_two_model_file_may_carry_quality_too() -> None:
    meta = _meta(
        models={"edge": "e", "cloud": "c"},
        **{
            META_DEFAULT_THRESHOLD: "0.5",
            META_CALIBRATION: Calibration.from_scores([0.1, 0.9]).to_json(),
        },
    )
    length = TensorSpec(LENGTH_INPUT_NAME, "float", (None,))
    sig = check_router_signature(
        [_embedding(), length], [TensorSpec(OUTPUT_NAME, "float", (None,)), _quality(2)], meta
    )
    assert sig.has_score and sig.n_models == 2 and sig.uses_query_length


def test_dry_run_checks_shapes_and_ranges() -> None:
    sig = check_router_signature([_embedding()], [_quality()], _meta())
    check_dry_run({QUALITY_OUTPUT_NAME: np.full((2, 3), 0.5)}, 2, sig)
    with pytest.raises(ContractError, match=r"shape \(2, 2\)"):
        check_dry_run({QUALITY_OUTPUT_NAME: np.full((2, 2), 0.5)}, 2, sig)
    with pytest.raises(ContractError, match=r"within \[0, 1\]"):
        check_dry_run({QUALITY_OUTPUT_NAME: np.full((2, 3), 1.5)}, 2, sig)
    with pytest.raises(ContractError, match="finite"):
        check_dry_run({QUALITY_OUTPUT_NAME: np.full((2, 3), np.nan)}, 2, sig)
    with pytest.raises(ContractError, match="no 'quality'"):
        check_dry_run({}, 2, sig)


@pytest.fixture(scope="module")
def fitted() -> KNNQualityRouter:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, DIM))
    Y = rng.random((40, 3))
    Y[::5, 1] = np.nan
    return KNNQualityRouter(n_neighbors=5).fit(X, Y)


def test_a_saved_quality_router_is_what_the_service_sees(
    fitted: KNNQualityRouter, tmp_path: Path
) -> None:
    meta = build_quality_metadata(
        embedding_model_id="enc",
        embedding_dim=DIM,
        label_scheme="dars",
        models=MODELS,
        router="knn_quality",
    )
    path = save_router(fitted.to_onnx(meta), tmp_path / "q.onnx")
    assert read_metadata(path) == meta
    session = router_session(path)
    inputs, outputs = tensor_specs_from_session(session)  # the service's view of the file
    sig = check_router_signature(inputs, outputs, read_metadata(path))
    assert sig.models == tuple(MODELS) and sig.n_models == 3
    X = np.random.default_rng(1).standard_normal((7, DIM))
    np.testing.assert_allclose(load_router_quality(session, X), fitted.predict(X), atol=1e-5)


def test_a_quality_file_with_the_wrong_model_count_is_not_written(
    fitted: KNNQualityRouter, tmp_path: Path
) -> None:
    meta = _meta(models=["a", "b"])
    with pytest.raises(RouterExportError, match=r"K=3 columns but dars\.models names 2"):
        save_router(fitted.to_onnx(meta), tmp_path / "q.onnx")
    assert not any(tmp_path.iterdir())


def test_quality_out_of_range_is_caught_by_the_dry_run(tmp_path: Path) -> None:
    # Quality = 2 * mean of the embedding tiled to 3 columns: valid graph, values outside [0, 1].
    graph = helper.make_graph(
        [
            helper.make_node("ReduceSum", [INPUT_NAME, "axes"], ["s"], keepdims=1),
            helper.make_node("Tile", ["s", "reps"], [QUALITY_OUTPUT_NAME]),
        ],
        "raw",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", DIM])],
        [helper.make_tensor_value_info(QUALITY_OUTPUT_NAME, TensorProto.FLOAT, ["batch", 3])],
        initializer=[
            helper.make_tensor("axes", TensorProto.INT64, [1], [1]),
            helper.make_tensor("reps", TensorProto.INT64, [2], [1, 3]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in _meta().items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    with pytest.raises(RouterExportError, match=r"'quality' values must lie within \[0, 1\]"):
        save_router(model, tmp_path / "bad.onnx")


def test_build_quality_metadata_refuses_two_model_kinds() -> None:
    with pytest.raises(ValueError, match="router must be one of"):
        build_quality_metadata(
            embedding_model_id="enc",
            embedding_dim=DIM,
            label_scheme="dars",
            models=MODELS,
            router="knn",
        )


# --- dars.quality_calibration: predicted qualities of calibration queries (spend targets)


def test_quality_calibration_is_accepted() -> None:
    rows = [[0.1, 0.5, 0.9], [0.2, 0.4, 1.0], [0, 0, 0]]
    meta = _meta(**{META_QUALITY_CALIBRATION: json.dumps({"quality": rows})})

    sig = check_router_signature([_embedding()], [_quality()], meta)

    assert sig.n_models == 3
    assert parse_quality_calibration(meta[META_QUALITY_CALIBRATION], 3)[1] == (0.2, 0.4, 1.0)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("[[0.1, 0.2, 0.3]]", r"must be \{"),
        (json.dumps({"quality": []}), "not empty"),
        ("{", "is not JSON"),
        (json.dumps({"quality": [[0.1, 0.2]]}), "row 0 has 2 values but the router knows K=3"),
        (json.dumps({"quality": [[0.1, 0.2, 0.3], [0.1, 0.2, 0.3, 0.4]]}), "row 1 has 4"),
        ('{"quality": [[0.1, NaN, 0.3]]}', "row 0 holds non-finite values"),
        ('{"quality": [[0.1, Infinity, 0.3]]}', "row 0 holds non-finite values"),
        (json.dumps({"quality": [[0.1, 1.5, 0.3]]}), r"outside \[0, 1\]"),
        (json.dumps({"quality": [[0.1, "a", 0.3]]}), "not a list of numbers"),
        (json.dumps({"quality": [[0.5, 0.5, 0.5]] * 257}), "257 rows, at most 256"),
    ],
)
def test_bad_quality_calibration_is_refused(value: str, message: str) -> None:
    meta = _meta(**{META_QUALITY_CALIBRATION: value})
    with pytest.raises(ContractError, match=message):
        check_router_signature([_embedding()], [_quality()], meta)


def test_quality_calibration_needs_a_quality_output() -> None:
    meta = {
        **_meta(models={"edge": "a", "cloud": "b"}),
        META_DEFAULT_THRESHOLD: "0.5",
        META_CALIBRATION: _CALIBRATION,
        META_QUALITY_CALIBRATION: json.dumps({"quality": [[0.1, 0.2]]}),
    }
    score = TensorSpec(OUTPUT_NAME, "float", (None,))
    with pytest.raises(ContractError, match="belongs to a router with a 'quality' output"):
        check_router_signature([_embedding()], [score], meta)


def test_the_trainer_writes_a_sample_of_its_calibration_predictions(
    fitted: KNNQualityRouter, tmp_path: Path
) -> None:
    held_out = np.random.default_rng(2).standard_normal((300, DIM))
    predicted = fitted.predict(held_out)
    meta = build_quality_metadata(
        embedding_model_id="enc",
        embedding_dim=DIM,
        label_scheme="dars",
        models=MODELS,
        router="knn_quality",
        calibration_quality=predicted,
    )
    path = save_router(fitted.to_onnx(meta), tmp_path / "q.onnx")

    rows = np.asarray(parse_quality_calibration(read_metadata(path)[META_QUALITY_CALIBRATION], 3))
    assert rows.shape == (256, 3)  # a seeded sample of the 300 predictions
    matches = np.abs(rows[:, None, :] - predicted[None, :, :]).max(axis=2).min(axis=1)
    assert matches.max() < 1e-5


def test_build_quality_metadata_refuses_calibration_of_another_k() -> None:
    with pytest.raises(ValueError, match="K=3"):
        build_quality_metadata(
            embedding_model_id="enc",
            embedding_dim=DIM,
            label_scheme="dars",
            models=MODELS,
            router="knn_quality",
            calibration_quality=np.full((4, 2), 0.5),
        )
