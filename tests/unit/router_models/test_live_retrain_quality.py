"""The live loop over K models: a v2 serving file is gated by AIQ against a quality router
trained on live observations, promoted as a v2 file the service loads, or refused.

Live observations of three upstream models (ids as the live export writes them): long
arithmetic prompts that the edge model fails and the mid and cloud models answer, short
greetings every model answers; three graded answers per (query, model), each with the cost the
upstream charged. The serving file predicts the same qualities for every query, so it cannot
send the greetings to the cheap edge model and the arithmetic to the mid one; the candidate can.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import pytest
from helpers.onnx_routers import make_linear_router
from helpers.quality_routers import make_quality_router

from app.scoring import load_router_model
from router_models.cli import main
from router_models.contract import DEFAULT_EMBEDDING_MODEL_ID, EMBEDDING_DIM
from router_models.export_onnx import check_router_model
from router_models.features import Embedder, prepare_prompts
from router_models.live.retrain import LoopConfig, retrain_once
from router_models.live.retrain_quality import gate_models
from router_models.observations import Observation, write_observations
from router_models.promotion import GateDecision, GatePolicy
from router_models.query_prep import DEFAULT_QUERY_POLICY

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

# The serving file's order, deliberately not sorted: the candidate must follow it.
SERVING_ORDER = ("cloud-model", "edge-model", "mid-model")
COST = {"edge-model": 0.0001, "mid-model": 0.0008, "cloud-model": 0.001}
NAMES = ["Alice", "Bob", "Chen", "Dana", "Emil", "Fatima", "Goro", "Hana", "Ivan", "Jun"]


def _observations() -> list[Observation]:
    rows = []
    for i in range(80):
        hard = i < 40
        prompt = (
            f"Compute {13 + i} multiplied by {47 + 3 * i}, then subtract {i * 7 + 5}, and state "
            "the final integer answer with every intermediate step on its own line."
            if hard
            else f"Say hi to {NAMES[i % 10]} #{i}."
        )
        for model, cost in COST.items():
            for s in range(3):
                score = 0.0 if hard and model == "edge-model" else 1.0
                rows.append(
                    Observation.from_dict(
                        {"dataset": "live", "split": "all", "query_id": f"live-{i:03d}",
                         "prompt": prompt, "model": model, "sample_id": s, "score": score,
                         "cost": cost, "meta": {"source": "judge"}}
                    )
                )  # fmt: skip
    return rows


@pytest.fixture(scope="module")
def live_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("live") / "obs.jsonl.gz"
    write_observations(path, _observations())
    return path


@pytest.fixture(scope="module")
def embed(encoder: SentenceTransformer, tmp_path_factory: pytest.TempPathFactory) -> Embedder:
    cache = tmp_path_factory.mktemp("embedding-cache")
    return Embedder(encoder=encoder, cache_dir=cache, progress=False, device="cpu")


def _config(state: Path, data: Path, serving: Path) -> LoopConfig:
    return LoopConfig(
        state_dir=state,
        data=[str(data)],
        serving=serving,
        holdout=0.3,
        gate=GatePolicy(min_queries=10),
    )


def _decisions(state: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (state / "decisions.jsonl").read_text().splitlines()]


def _decision_fields(row: dict[str, Any]) -> dict[str, Any]:
    """The GateDecision part of a logged gate line (without the loop's own fields)."""
    extra = ("ts", "event", "n_train_queries", "decision_cost_usd")
    return {k: v for k, v in row.items() if k not in extra}


def test_a_better_k_model_candidate_is_promoted_as_a_v2_file_then_not_replaced(
    tmp_path: Path, live_data: Path, embed: Embedder
) -> None:
    serving = make_quality_router(tmp_path / "serving.onnx", [0.9, 0.5, 0.7], SERVING_ORDER)
    state = tmp_path / "state"
    promoted = retrain_once(_config(state, live_data, serving), embedder=embed)
    gate = [d for d in _decisions(state) if d["event"] == "gate"][-1]
    assert promoted["event"] == "promote", gate
    assert (gate["metric"], gate["verdict"], gate["reason"]) == (
        "AIQ",
        "promote",
        "better-by-margin",
    )
    assert gate["models"] == list(SERVING_ORDER) and gate["weak_model"] is None
    assert gate["delta"] >= 0.01 and 0 < gate["delta_lower"] <= gate["delta"]
    assert (gate["confidence"], gate["n_resamples"]) == (0.95, 1000)
    assert gate["decision_cost_usd"] == pytest.approx(COST)
    fields = _decision_fields(gate)
    assert GateDecision.from_dict(fields).to_dict() == fields  # the record round-trips

    path = Path(promoted["path"])
    signature = check_router_model(onnx.load(str(path)))  # the contract validator
    assert signature.models == SERVING_ORDER and signature.has_quality
    model = load_router_model(
        path, expected_embedding_model=DEFAULT_EMBEDDING_MODEL_ID, expected_dim=EMBEDDING_DIM
    )  # the service's loader
    assert model.model_ids == SERVING_ORDER and model.decides_by_utility
    assert model.router_kind == "knn_quality" and model.quality_calibration is not None
    assert model.quality_calibration.shape[1] == 3
    assert json.loads((state / "state.json").read_text())["previous"] == str(serving)

    # The next turn gates the same data against the promoted file: the same candidate again,
    # no better, so it stays.
    again = retrain_once(_config(state, live_data, serving), embedder=embed)
    assert (again["event"], again["reason"]) == ("gate", "not-better")
    assert again["serving"]["sha256"] == promoted["sha256"]


def test_a_serving_file_with_models_missing_from_the_live_data_is_refused(
    tmp_path: Path, live_data: Path, embed: Embedder
) -> None:
    models = ("cloud-model", "edge-model", "other-model")
    serving = make_quality_router(tmp_path / "serving.onnx", [0.9, 0.5, 0.7], models)
    state = tmp_path / "state"
    decision = retrain_once(_config(state, live_data, serving), embedder=embed)
    assert (decision["event"], decision["reason"]) == ("skip", "models-mismatch")
    assert "['other-model'] never observed" in decision["detail"]
    assert not (state / "state.json").exists() and not (state / "routers").exists()


def test_the_cli_passes_the_aiq_margin_and_the_bootstrap_settings(
    tmp_path: Path, live_data: Path, embed: Embedder
) -> None:
    serving = make_quality_router(tmp_path / "serving.onnx", [0.9, 0.5, 0.7], SERVING_ORDER)
    state = tmp_path / "state"
    # The CLI's embedder reads the cache under the state directory: seed it with this one's.
    embed(prepare_prompts(sorted({o.prompt for o in _observations()}), DEFAULT_QUERY_POLICY))
    state.mkdir()
    (state / "embeddings").symlink_to(Path(str(embed.cache_dir)), target_is_directory=True)
    code = main([
        "live", "retrain", "--data", str(live_data), "--state-dir", str(state),
        "--serving", str(serving), "--holdout", "0.3", "--min-queries", "10",
        "--aiq-margin", "0.5", "--confidence", "0.9", "--resamples", "200",
    ])  # fmt: skip
    assert code == 0
    gate = _decisions(state)[-1]
    assert (gate["event"], gate["reason"]) == ("gate", "within-margin")
    assert (gate["margin"], gate["confidence"], gate["n_resamples"]) == (0.5, 0.9, 200)
    assert np.isfinite(gate["delta_lower"])


def test_the_gate_kind_follows_the_serving_file_and_the_live_models(tmp_path: Path) -> None:
    """Two-model file and two live models: APGR; a pinned pair: APGR; a two-model file and
    three live models: AIQ over its pair first, then the other live models."""
    rows = _observations()
    pair = make_linear_router(
        tmp_path / "pair.onnx", edge_model="edge-model", cloud_model="cloud-model"
    )
    config = LoopConfig(state_dir=tmp_path)
    two = [o for o in rows if o.model != "mid-model"]
    assert gate_models(pair, two, config) is None
    pinned = LoopConfig(state_dir=tmp_path, weak="edge-model", strong="cloud-model")
    assert gate_models(pair, rows, pinned) is None
    assert gate_models(pair, rows, config) == ("edge-model", "cloud-model", "mid-model")
    v2 = make_quality_router(tmp_path / "v2.onnx", [0.9, 0.5], ("cloud-model", "edge-model"))
    assert gate_models(v2, two, config) == ("cloud-model", "edge-model")


def test_a_k_model_serving_file_takes_the_aiq_gate_even_with_a_pinned_pair(
    tmp_path: Path,
) -> None:
    """--weak/--strong pin a pair only for a two-model serving file: a v2 file has no score
    output for the APGR gate (the turn crashed in onnxruntime after training)."""
    rows = _observations()
    v2 = make_quality_router(tmp_path / "v2.onnx", [0.9, 0.5, 0.7], SERVING_ORDER)
    pinned = LoopConfig(state_dir=tmp_path, weak="edge-model", strong="cloud-model")
    assert gate_models(v2, rows, pinned) == SERVING_ORDER


def test_two_live_upstreams_not_named_edge_and_cloud_skip_the_pair_turn_with_a_reason(
    tmp_path: Path,
) -> None:
    """A two-model serving file, two live models from upstreams named otherwise, no pinned
    pair: the turn logs why (and how to fix it) instead of crashing a ``--every`` loop."""
    rows = [o for o in _observations() if o.model != "mid-model"]
    for o in rows:
        o.meta["upstream"] = "small" if o.model == "edge-model" else "large"
    data = tmp_path / "obs.jsonl.gz"
    write_observations(data, rows)
    pair = make_linear_router(
        tmp_path / "pair.onnx", edge_model="edge-model", cloud_model="cloud-model"
    )

    decision = retrain_once(_config(tmp_path / "state", data, pair))

    assert (decision["event"], decision["reason"]) == ("skip", "no-pair")
    assert "--weak and --strong" in decision["detail"]
