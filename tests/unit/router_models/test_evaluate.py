"""Routing metrics on curves with known answers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from router_models.evaluate import (
    Truth,
    apgr,
    auc,
    cpt,
    evaluate_router,
    evaluate_routers,
    markdown_table,
    oracle_scores,
    prompt_length_scores,
    quality_curve,
    random_curve,
    save_reports,
    truth_from_observations,
)
from router_models.observations import Observation

# Four queries: the strong model helps only on the last two.
WEAK = np.array([1.0, 0.0, 0.0, 0.0])
STRONG = np.array([1.0, 0.0, 1.0, 1.0])


def truth(prompts: tuple[str, ...] = ("a", "bb", "ccc", "dddd")) -> Truth:
    return Truth(query_ids=("q0", "q1", "q2", "q3"), prompts=prompts, weak=WEAK, strong=STRONG)


def test_quality_curve_routes_top_scores_first() -> None:
    curve = quality_curve([0.1, 0.2, 0.9, 0.8], WEAK, STRONG)
    assert curve.share.tolist() == [0, 0.25, 0.5, 0.75, 1.0]
    assert curve.quality.tolist() == pytest.approx([0.25, 0.5, 0.75, 0.75, 0.75])


def test_ties_get_the_expected_curve() -> None:
    constant = quality_curve(np.zeros(4), WEAK, STRONG)
    assert constant.quality == pytest.approx(np.linspace(0.25, 0.75, 5))
    assert constant.quality == pytest.approx(random_curve(WEAK, STRONG).quality)


def test_cpt_known_values() -> None:
    perfect = quality_curve([0, 0, 1, 1], WEAK, STRONG)
    # Gap 0.25 -> 0.75; half the gap (0.5) is reached after one of four queries.
    assert cpt(perfect, 0.5) == 0.25
    assert cpt(perfect, 0.8) == 0.5
    assert cpt(perfect, 0.2) == 0.25
    worst = quality_curve([1, 1, 0, 0], WEAK, STRONG)
    assert cpt(worst, 0.5) == 0.75
    # Random: quality 0.25, 0.375, 0.5, 0.625, 0.75; 80% of the gap (0.65) needs all four.
    rand = random_curve(WEAK, STRONG)
    assert [cpt(rand, x) for x in (0.2, 0.5, 0.8)] == [0.25, 0.5, 1.0]


def test_auc_and_apgr_known_values() -> None:
    rand = random_curve(WEAK, STRONG)
    assert auc(rand) == pytest.approx(0.5)  # straight line from 0.25 to 0.75
    assert apgr(rand) == pytest.approx(0.5)
    perfect = quality_curve([0, 0, 1, 1], WEAK, STRONG)
    # Trapezoids: (0.25+0.5)/2, (0.5+0.75)/2, then 0.75 twice, each over 0.25.
    assert auc(perfect) == pytest.approx((0.375 + 0.625 + 0.75 + 0.75) / 4)
    assert apgr(perfect) == pytest.approx((auc(perfect) - 0.25) / 0.5)


def test_no_gap_gives_nan() -> None:
    curve = quality_curve([0.3, 0.1], [1.0, 0.0], [1.0, 0.0])
    assert math.isnan(cpt(curve, 0.5)) and math.isnan(apgr(curve))


def test_random_row_and_oracle_bound_on_random_data() -> None:
    rng = np.random.default_rng(0)
    weak = (rng.random(2000) < 0.6).astype(float)
    strong = (rng.random(2000) < 0.8).astype(float)
    t = Truth(tuple(map(str, range(2000))), ("p",) * 2000, weak, strong)
    oracle = evaluate_router("oracle", oracle_scores(weak, strong), t)
    random_scores = evaluate_router("random-scores", rng.random(2000), t)
    assert random_scores.apgr == pytest.approx(0.5, abs=0.05)
    for scores in (rng.random(2000), strong - weak + rng.normal(0, 0.5, 2000), weak):
        report = evaluate_router("r", scores, t)
        assert np.all(oracle.curve.quality >= report.curve.quality - 1e-12)
        assert oracle.apgr >= report.apgr


def test_evaluate_routers_adds_baseline_rows() -> None:
    reports = evaluate_routers({"mine": [0.0, 0.0, 1.0, 1.0]}, truth())
    assert [r.name for r in reports] == ["random", "prompt-length", "mine", "oracle"]
    rows = {r.name: r.as_percent() for r in reports}
    assert rows["random"]["APGR"] == pytest.approx(50.0)
    assert rows["random"]["CPT(50%)"] == pytest.approx(50.0)
    # Longest prompts are q3, q2: the length baseline is perfect on this toy set.
    assert rows["prompt-length"] == pytest.approx(rows["oracle"])
    assert prompt_length_scores(["ab", "abc"]).tolist() == [2.0, 3.0]


def test_markdown_table_in_percent() -> None:
    table = markdown_table(evaluate_routers({}, truth()), title="toy")
    lines = table.splitlines()
    assert lines[0] == "### toy"
    assert lines[2] == "| router | CPT(20%) | CPT(50%) | CPT(80%) | APGR | AUC |"
    assert "| random | 25.0 | 50.0 | 100.0 | 50.0 | 50.0 |" in lines


def test_save_reports_writes_table_json_and_png(tmp_path: Path) -> None:
    paths = save_reports(evaluate_routers({"mine": [0, 1, 0, 1]}, truth()), tmp_path, title="toy")
    assert paths["png"].read_bytes().startswith(b"\x89PNG")
    data = json.loads(paths["json"].read_text())
    assert [row["name"] for row in data] == ["random", "prompt-length", "mine", "oracle"]
    assert paths["markdown"].read_text().startswith("### toy")


def test_truth_is_mean_observed_quality() -> None:
    def o(q: str, model: str, score: float, sample: int) -> Observation:
        return Observation("gsm8k", "test", q, f"p{q}", model, score, sample_id=sample)

    rows = [o("a", "w", 1, 0), o("a", "w", 0, 1), o("a", "s", 1, 0), o("b", "w", 0, 0)]
    t = truth_from_observations(rows, "w", "s")
    assert t.query_ids == ("a",) and t.weak.tolist() == [0.5] and t.strong.tolist() == [1.0]


def test_input_validation() -> None:
    with pytest.raises(ValueError, match="must match"):
        quality_curve([0.1], WEAK, STRONG)
    with pytest.raises(ValueError, match="finite"):
        quality_curve([np.nan, 0, 0, 0], WEAK, STRONG)
    with pytest.raises(ValueError, match="equally long"):
        Truth(("a",), ("p", "q"), WEAK[:1], STRONG[:1])
