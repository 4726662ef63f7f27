"""The cascade experiment: sample orders, operating points, and the driver end to end on a tiny
made-up data directory (real encoder, real routers; nothing from ``../shared``).

In the fixture the edge model's three samples agree on the right answer for "easy" queries
and scatter over wrong answers for "hard" ones, which only the cloud model solves: a working
cascade must send exactly the hard ones up.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from router_models.cascade import PriceTable
from router_models.experiments import cascade
from router_models.experiments.cascade_eval import Signals, choose_point, operating_points
from router_models.experiments.cascade_samples import (
    EdgeQuery,
    Sample,
    order_samples,
    variant_ranking,
)
from router_models.features import Embedder
from router_models.observations import Observation, write_observations

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

PRICES = PriceTable(edge=0.1, cloud=1.0)


def _query(spec: dict[int, list[float]]) -> EdgeQuery:
    samples = tuple(
        Sample(v, s, f"v{v}s{s}", str(v), score)
        for v, scores in spec.items()
        for s, score in enumerate(scores)
    )
    return EdgeQuery("q", "gsm8k", "p", samples)


def test_sample_orders_follow_the_variant_ranking() -> None:
    query = _query({0: [0.0], 1: [1.0, 1.0], 2: [1.0]})
    assert variant_ranking([query]) == [1, 2, 0]
    ordered = order_samples(query, "variants", [1, 2, 0])
    assert [(s.variant_id, s.sample_id) for s in ordered] == [(1, 0), (2, 0), (0, 0), (1, 1)]
    assert [s.variant_id for s in order_samples(query, "decodes", [2, 1, 0])] == [1, 1]
    with pytest.raises(ValueError, match="order"):
        order_samples(query, "shuffled")


def test_cheapest_threshold_that_reaches_the_target() -> None:
    sig = Signals(
        uncertainty=np.asarray([0.0, 0.0, 0.7, 1.1]),
        keep_quality=np.asarray([1.0, 1.0, 0.0, 0.0]),
        k_used=np.full(4, 3.0),
    )
    strong = np.ones(4)
    points = operating_points(sig, strong, 3, PRICES)
    assert [p.share for p in points] == [0.0, 0.25, 0.5, 1.0]
    assert [p.quality for p in points] == [0.5, 0.75, 1.0, 1.0]
    best = choose_point(points, target=0.9)
    assert best.threshold == 0.0 and best.cost == pytest.approx(3 * 0.1 + 0.5)
    assert choose_point(points, target=0.5).share == 0.0


EASY = "Tom has {n} apples and buys {m} more apples at the shop. How many apples now?"
HARD = "Evaluate the integral of x^{n} sin({m}x) from 0 to pi by parts, as a decimal."


def _row(i: int, model: str, variant: int, answer: str, gold: str, **extra: Any) -> Observation:
    hard = i % 2 == 0
    return Observation(
        dataset=extra.pop("dataset", "gsm8k"),
        split="test",
        query_id=f"q-{i:03d}",
        prompt=(HARD if hard else EASY).format(n=i + 2, m=i % 5 + 2),
        model=model,
        score=float(answer == gold),
        variant_id=variant,
        sample_id=extra.pop("sample_id", 0),
        response=f"Working... The answer is {answer}.",
        meta={"source": "re2", "answer": gold, "pred": answer, **extra},
    )


def _fixture(path: Path, n: int = 36) -> None:
    rows = []
    for i in range(n):
        gold = str(10 + i)
        for v in range(3):  # three prompt variants, one greedy decode each
            edge = str(100 + i * 3 + v) if i % 2 == 0 else gold
            rows.append(_row(i, "edge", v, edge, gold))
            rows.append(_row(i, "cloud", v, gold, gold))
    write_observations(path, rows)


def test_driver_end_to_end(tmp_path: Path, encoder: SentenceTransformer) -> None:
    data = tmp_path / "data"
    data.mkdir()
    _fixture(data / "tiny.jsonl.gz")
    spec = cascade.StudySpec("tiny: edge → cloud", "tiny.jsonl.gz", "re2", "edge", "cloud", "3")
    settings = cascade.Settings(
        studies=(spec,), ks=(2, 3), routers=("knn",), prices=PRICES, n_bootstrap=20
    )
    embed = Embedder(encoder=encoder, cache_dir=tmp_path / "cache", progress=False)
    out = tmp_path / "reports"
    argv = ["--data", str(data), "--out", str(out)]
    paths = cascade.run(data, out, settings=settings, embed=embed, argv=argv)

    assert paths["png"].stat().st_size > 0
    markdown = paths["markdown"].read_text()
    assert "python -m router_models.experiments.cascade --data" in markdown
    assert "### tiny: edge → cloud" in markdown
    numbers = json.loads(paths["json"].read_text())
    (study,) = numbers["studies"]
    rows = {r["name"]: r for r in study["rows"]}
    # Disagreement marks exactly the hard half: the cascade ranks like the oracle.
    assert rows["cascade"]["APGR"] == pytest.approx(rows["oracle"]["APGR"], abs=0.1)
    assert rows["cascade"]["CPT80"] < rows["random"]["CPT80"]
    k = rows["cascade"]["k"]
    assert k == 2  # two samples already separate the halves; the third would only cost
    assert rows["cascade"]["cost80"] == pytest.approx(
        k * 0.1 + rows["cascade"]["CPT80"] / 100, abs=1e-3
    )
    assert rows["knn"]["cost80"] == pytest.approx(
        (1 - rows["knn"]["CPT80"] / 100) * 0.1 + rows["knn"]["CPT80"] / 100, abs=1e-3
    )
    deployed = study["deployed"]
    assert deployed["quality"] == pytest.approx(100.0)  # hard ones escalated, easy ones kept
    assert deployed["share"] == pytest.approx(50.0, abs=10)
    assert study["n_train"] + study["n_test"] == 36


def test_open_answers_cluster_by_embedding(tmp_path: Path, encoder: SentenceTransformer) -> None:
    """NQ-style rows have no final answer: the driver embeds the responses to group them."""
    rows = []
    for i in range(12):
        for v, text in enumerate(("Paris.", "It is Paris.", "Lyon, I think.")):
            answer = text if i % 2 == 0 else "Paris."
            rows.append(_row(i, "edge", v, answer, "Paris.", dataset="nq-open"))
            rows.append(_row(i, "cloud", v, "Paris.", "Paris.", dataset="nq-open"))
    path = tmp_path / "nq.jsonl.gz"
    write_observations(path, rows)
    spec = cascade.StudySpec("nq", str(path), None, "edge", "cloud", "3", ("auto", "text"))
    settings = cascade.Settings(studies=(spec,), ks=(3,), routers=("knn",), n_bootstrap=5)
    embed = Embedder(encoder=encoder, cache_dir=tmp_path / "cache", progress=False)
    result = cascade.run_study(spec, rows, embed, settings)
    assert result.chosen["config"].startswith("k=3")
    by_name = {r["name"]: r for r in result.rows}
    assert by_name["cascade"]["APGR"] > by_name["random"]["APGR"]
