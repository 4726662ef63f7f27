"""The learning-curve driver end to end on a tiny synthetic source (real encoder, real ONNX).

The source mimics a multi-sample data file: "hard" questions (calculus) that only the strong
model usually solves and "easy" ones (counting) that both solve, 6 samples per pair, so labels
from all samples are nearly clean while one sample often flips them. The start router is a real
constant ONNX router (APGR 50). Nothing from ``../shared`` is read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from helpers.onnx_routers import make_linear_router

from router_models.experiments import learning_curve
from router_models.experiments.learning_curve import Settings, Source, one_sample
from router_models.features import Embedder
from router_models.observations import Observation, write_observations

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

EASY = "Tom has {n} apples and buys {m} more apples at the shop. How many apples does Tom have?"
HARD = "Evaluate the definite integral of x^{n} times sin({m}x) from 0 to pi by parts."
RATES = {"weak-a": (0.8, 0.1), "strong-b": (0.95, 0.9)}  # (easy, hard) success rates


def _observations(n_queries: int, samples: int, seed: int = 0) -> list[Observation]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_queries):
        hard = i % 2 == 0
        prompt = (HARD if hard else EASY).format(n=i + 3, m=i % 11 + 2)
        for model, (easy_rate, hard_rate) in RATES.items():
            for s in range(samples):
                score = float(rng.random() < (hard_rate if hard else easy_rate))
                rows.append(
                    Observation.from_dict(
                        {
                            "dataset": "tiny",
                            "split": "test",
                            "query_id": f"tiny-{i:04d}",
                            "prompt": prompt,
                            "sample_id": s,
                            "model": model,
                            "score": score,
                        }
                    )
                )
    return rows


@pytest.fixture(scope="module")
def embed(encoder: SentenceTransformer, tmp_path_factory: pytest.TempPathFactory) -> Embedder:
    cache = tmp_path_factory.mktemp("embedding-cache")
    return Embedder(encoder=encoder, cache_dir=cache, progress=False, device="cpu")


def test_one_sample_keeps_one_seeded_observation_per_pair() -> None:
    rows = _observations(10, samples=6)
    drawn = one_sample(rows, seed=3)
    assert len(drawn) == 10 * len(RATES)
    assert len({(o.query_id, o.model) for o in drawn}) == len(drawn)
    keys = {(o.query_id, o.model, o.sample_id) for o in drawn}
    reordered = one_sample(list(reversed(rows)), seed=3)
    assert {(o.query_id, o.model, o.sample_id) for o in reordered} == keys  # order-free
    other = {(o.query_id, o.model, o.sample_id) for o in one_sample(rows, seed=4)}
    assert other != keys


def test_learning_curve_end_to_end(tmp_path: Path, embed: Embedder) -> None:
    data = tmp_path / "data"
    data.mkdir()
    write_observations(data / "tiny.jsonl.gz", _observations(72, samples=6))
    start = make_linear_router(tmp_path / "start.onnx", dim=384)  # constant: APGR 50
    settings = Settings(
        sources=(Source("tiny", "tiny.jsonl.gz", weak="weak-a", strong="strong-b"),),
        checkpoints=(12, 24),
        n_seeds=2,
        gate_fraction=0.3,
        margin=1.0,
        min_gate_queries=3,
        start_router=str(start),
    )
    out = tmp_path / "reports"
    paths = learning_curve.run(data, out, settings=settings, embed=embed, argv=["--seeds", "2"])

    assert paths["png"].stat().st_size > 0
    markdown = paths["markdown"].read_text()
    assert "python -m router_models.experiments.learning_curve --seeds 2" in markdown
    assert "## Computed comparisons" in markdown and "weak-a → strong-b" in markdown
    numbers = json.loads(paths["json"].read_text())
    (source,) = numbers["sources"]
    assert source["start_apgr"] == pytest.approx(50.0)
    assert source["n_test"] + source["n_pool"] == 72 and source["n_test"] > 0
    assert source["checkpoints"] == [12, 24, source["n_pool"]]
    knn = source["routers"]["knn"]
    for scheme in ("dars", "single-shot"):
        runs = knn["runs"][scheme]
        assert len(runs) == 2 and all(len(run) == 3 for run in runs)
        for run in runs:
            serving = 50.0
            for point in run:
                assert point["n_train"] + point["n_gate"] == point["n"]
                if point["verdict"] == "promote":
                    assert point["reason"] == "better-by-margin"
                    serving = point["candidate_apgr"]
                assert point["promoted_apgr"] == pytest.approx(serving)
    # With every sample, hard and easy questions separate cleanly: the retrained router on the
    # whole pool beats random on the test slice, and the gate lets it replace the start router.
    final = [run[-1] for run in knn["runs"]["dars"]]
    assert all(p["candidate_apgr"] > 60 for p in final)
    assert all(p["promoted_apgr"] > 60 for p in final)
