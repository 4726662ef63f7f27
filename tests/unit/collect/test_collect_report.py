"""The dataset report: accuracy, rewrite reasons, label agreement and the variance split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from router_models.collect.report import dataset_report, label_agreement
from router_models.collect.rewrite import reason_kind
from router_models.observations import Observation, write_observations

# query -> model -> [[scores of variant 0], [scores of variant 1]]
SCORES = {
    "q-easy": {"weak": [[1, 1], [1, 1]], "strong": [[1, 1], [1, 1]]},
    "q-wording": {"weak": [[0, 0], [0, 0]], "strong": [[1, 1], [0, 0]]},
    "q-luck": {"weak": [[0, 0], [0, 0]], "strong": [[1, 0], [1, 0]]},
}


def _rows() -> list[Observation]:
    return [
        Observation(
            dataset="gsm8k",
            split="test",
            query_id=qid,
            prompt=f"question {qid}",
            model=model,
            score=float(score),
            variant_id=v,
            sample_id=s,
            cost=0.001 if model == "strong" else 0.0001,
            meta={"usage": {"completion_tokens": 10}, "latency_s": 1.0},
        )
        for qid, by_model in SCORES.items()
        for model, variants in by_model.items()
        for v, scores in enumerate(variants)
        for s, score in enumerate(scores)
    ]


def test_label_agreement_sees_what_one_draw_misses() -> None:
    result = label_agreement(_rows(), "weak", "strong", draws=50)
    assert result["queries"] == 3
    # q-wording and q-luck: a single draw of the strong model is 1 or 0 depending on the seed.
    assert result["unstable"] == pytest.approx(2 / 3)
    assert 0.0 < result["disagree"] < 1.0


def test_report_sections_and_variance_split(tmp_path: Path) -> None:
    path = tmp_path / "obs.jsonl.gz"
    write_observations(path, _rows())
    rewrites = tmp_path / "obs.rewrites.jsonl"
    rewrites.write_text(
        json.dumps(
            {
                "dataset": "gsm8k",
                "query_id": "q-easy",
                "accepted": ["reworded"],
                "rejected": [
                    {"text": "x", "reasons": ["length ratio 0.10", "similarity 0.2 < 0.8"]}
                ],
            }
        )
        + "\n"
    )
    text = dataset_report(path, weak="weak", strong="strong", rewrites=rewrites, k=1, draws=10)
    for heading in (
        "## Accuracy per model",
        "## Rewrites",
        "## Single-shot vs DARS",
        "## Input-side",
    ):
        assert heading in text
    assert "| gsm8k | strong | 3 | 12 | 0.667 | 1.000 |" in text
    assert "| length ratio | 1 |" in text and "| similarity | 1 |" in text
    # strong: q-wording is all input-side (variance 0.25), q-luck all output-side (0.25).
    assert "| strong | all queries | 3 | 0.0833 | 0.0833 | 0.50 |" in text


def test_reason_kind() -> None:
    assert reason_kind("numbers changed (missing ['3'], added [])") == "numbers changed"
    assert reason_kind("similarity 0.512 < 0.8") == "similarity"
    assert reason_kind("duplicate of another rewrite") == "duplicate of another rewrite"
