"""The N-way driver end to end on a tiny synthetic file (a fake encoder, no ../shared)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from router_models.experiments import n_way
from router_models.features import Embedder
from router_models.observations import Observation, write_observations

# Cheap, mid and dear models that have prices in router_models.prices.
CHEAP, MID, DEAR = "gemma-2b-it", "fusechat-gemma-2-9b-instruct", "gpt4_1106_preview"


class TopicEncoder:
    """Unit vectors that separate the three topics of the fixture (plus seeded noise)."""

    def encode(self, texts: list[str], **_: Any) -> np.ndarray:
        out = []
        for text in texts:
            rng = np.random.default_rng(int(hashlib.sha256(text.encode()).hexdigest()[:8], 16))
            lower = text.lower()
            topic = ["apples" in lower, "integral" in lower, "poem" in lower].index(True)
            vector = np.eye(8)[topic] + 0.2 * rng.standard_normal(8)
            out.append(vector / np.linalg.norm(vector))
        return np.asarray(out, dtype=np.float32)


def _rows(n: int = 90) -> list[Observation]:
    """Counting is solved by all, integrals only by the dear model, poems by mid and dear."""
    skill = {CHEAP: (0.9, 0.05, 0.1), MID: (0.9, 0.1, 0.8), DEAR: (0.95, 0.9, 0.9)}
    prompts = ("Count {i} apples and {j} apples.", "Integral of x^{i} sin({j}x)?", "A poem on {i}")
    rng = np.random.default_rng(0)
    rows = []
    for q in range(n):
        topic = q % 3
        prompt = prompts[topic].format(i=q, j=q % 7 + 1)
        for model, rates in skill.items():
            if model == MID and q % 11 == 0:
                continue  # a missing cell
            for sample in range(3):
                rows.append(
                    Observation(
                        dataset="toy",
                        split="train",
                        query_id=f"toy-{q:04d}",
                        prompt=prompt,
                        model=model,
                        score=float(rng.random() < rates[topic]),
                        sample_id=sample,
                        response="answer " * (5 + topic),
                    )
                )
    return rows


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    data = tmp_path_factory.mktemp("data")
    write_observations(data / "toy.jsonl.gz", _rows())
    settings = n_way.Settings(
        studies=(n_way.Study("toy", "toy.jsonl.gz", models=(CHEAP, MID, DEAR)),),
        test_fraction=0.3,
        validation_fraction=0.3,
        grids={
            "knn_quality": ({"n_neighbors": 5},),
            "mf_quality": ({"n_factors": 4, "max_iter": 20, "learning_rate": 1e-2},),
            "mlp_quality": ({"hidden_layer_sizes": (16, 8), "max_iter": 20},),
        },
        n_draws=2,
        n_boot=30,
        n_splits=2,
    )
    embed = Embedder(encoder=TopicEncoder(), cache_dir=False, progress=False)  # type: ignore[arg-type]
    return n_way.run(
        data, tmp_path_factory.mktemp("out"), settings=settings, embed=embed, argv=["--x"]
    )


def test_the_driver_writes_markdown_json_and_png(report: dict[str, Path]) -> None:
    text = report["markdown"].read_text()
    assert "python -m router_models.experiments.n_way --x" in text
    assert "### toy (3 models)" in text and "DARS vs single-shot" in text
    assert f"cheapest `{CHEAP}` + best `{DEAR}`" in text
    assert report["png"].stat().st_size > 1000


def test_the_numbers_are_consistent(report: dict[str, Path]) -> None:
    numbers = json.loads(report["json"].read_text())["toy"]
    routers = numbers["routers"]
    oracle = routers["N-way oracle"]["AIQ"]
    for name, row in routers.items():
        assert 0.0 <= row["AIQ"] <= oracle + 1e-9, name
    # The planted skills reward routing: the N-way routers beat random mixtures.
    best_n_way = max(routers[f"N-way {k}"]["AIQ"] for k in n_way.GRIDS)
    assert numbers["chosen_parameters"]["N-way knn_quality"] == {"n_neighbors": "5"}
    assert best_n_way > routers["N-way random mixtures"]["AIQ"]
    comparison = numbers["comparison"]
    assert comparison["low"] <= comparison["diff"] <= comparison["high"]
    assert len(numbers["single_shot"]["aiq"]) == 2
    assert (
        len(numbers["splits"]) == 2
        and len(numbers["splits_dars_count_dars_uniform_single_shot"]) == 2
    )
    assert "over 2 splits" in numbers["verdict"]
    assert numbers["queries"]["test"] > 0


def test_subsample_keeps_whole_queries_per_dataset() -> None:
    rows = _rows(30)
    kept = n_way.subsample_queries(rows, 5, seed=0)
    ids = {o.query_id for o in kept}
    assert len(ids) == 5
    assert all(
        sum(o.query_id == q for o in kept) == sum(o.query_id == q for o in rows) for q in ids
    )
    assert n_way.subsample_queries(rows, 5, seed=0) == kept  # deterministic
    assert n_way.subsample_queries(rows, None, seed=0) == rows
