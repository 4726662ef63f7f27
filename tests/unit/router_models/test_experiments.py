"""The experiment drivers end to end on a small synthetic data directory (real encoder, real ONNX).

The fixture mimics the shared data files by name but holds made-up queries: "hard" questions
(calculus) that only the strong model solves and "easy" ones (counting) that both solve, so a
working router must beat random. Nothing from ``../shared`` is read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from router_models.contract import META_DEFAULT_THRESHOLD, META_LABEL_SCHEME, META_MODELS
from router_models.evaluate import truth_from_observations
from router_models.experiments import dars_vs_single_shot, paper_protocol, pretrain
from router_models.experiments.common import (
    drop_test_prompts,
    model_pairs,
    normalize_text,
    paired_labels,
    query_fold,
)
from router_models.export_onnx import load_router_scores, read_metadata
from router_models.features import Embedder
from router_models.observations import Observation, write_observations

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

EASY = "Tom has {n} apples and buys {m} more apples at the shop. How many apples does Tom have?"
HARD = (
    "Evaluate the definite integral of x^{n} times sin({m}x) from 0 to pi, "
    "using integration by parts."
)


def _prompt(i: int, offset: int) -> str:
    template = HARD if i % 2 == 0 else EASY
    return template.format(n=i + offset, m=(i * 7 + offset) % 13 + 2)


def _rows(
    *,
    dataset: str,
    split: str,
    prefix: str,
    n_queries: int,
    models: dict[str, tuple[float, float]],
    samples: int,
    variants: int = 1,
    offset: int = 0,
    seed: int = 0,
    meta: dict[str, Any] | None = None,
    responses: bool = False,
) -> list[dict[str, Any]]:
    """``models`` maps a name to its success rate on (easy, hard) queries."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_queries):
        prompt = _prompt(i, offset)
        for model, (easy, hard) in models.items():
            rate = hard if i % 2 == 0 else easy
            for v in range(variants):
                for s in range(samples):
                    ok = bool(rng.random() < rate)
                    out.append(
                        {
                            "dataset": dataset,
                            "split": split,
                            "query_id": f"{prefix}-{i:05d}",
                            "prompt": prompt,
                            "variant_id": v,
                            "variant": None,
                            "sample_id": s,
                            "model": model,
                            "score": float(ok),
                            "response": (
                                f"The answer is {42 if ok else i}." if responses else None
                            ),
                            "cost": None,
                            "meta": dict(meta or {}),
                        }
                    )
    return out


def _write(path: Path, rows: list[dict[str, Any]]) -> None:
    write_observations(path, [Observation.from_dict(r) for r in rows])


@pytest.fixture(scope="module")
def embed(encoder: SentenceTransformer, tmp_path_factory: pytest.TempPathFactory) -> Embedder:
    cache = tmp_path_factory.mktemp("embedding-cache")
    return Embedder(encoder=encoder, cache_dir=cache, progress=False, device="cpu")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic stand-ins for the shared files the drivers read."""
    root = tmp_path_factory.mktemp("data")
    seven = {"weak-a": (0.8, 0.1), "mid-b": (0.9, 0.4), "strong-c": (0.95, 0.9)}
    _write(
        root / "gsm8k-train-multi.jsonl.gz",
        _rows(
            dataset="gsm8k",
            split="train",
            prefix="gsm8k-train",
            n_queries=40,
            models=seven,
            samples=6,
            offset=100,
        ),
    )
    multi = _rows(
        dataset="gsm8k",
        split="test",
        prefix="gsm8k-test",
        n_queries=30,
        models=seven,
        samples=6,
        meta={"source": "routerdc"},
        seed=1,
    )
    multi += _rows(
        dataset="gsm8k",
        split="test",
        prefix="gsm8k-test",
        n_queries=30,
        models={"small": (0.7, 0.2), "big": (0.9, 0.9)},
        samples=2,
        variants=2,
        meta={"source": "re2"},
        seed=2,
        responses=True,
    )
    _write(root / "gsm8k-multi.jsonl.gz", multi)
    pair = {paper_protocol.WEAK: (0.9, 0.2), paper_protocol.STRONG: (0.95, 0.9)}
    test = _rows(
        dataset="gsm8k",
        split="test",
        prefix="gsm8k-test",
        n_queries=30,
        models=pair,
        samples=1,
        seed=3,
    )
    for row in test:
        row["meta"]["contaminated"] = row["query_id"] == "gsm8k-test-00001"
    _write(root / "routellm-gsm8k.jsonl.gz", test)
    mmlu = _rows(
        dataset="mmlu",
        split="test",
        prefix="mmlu-test-x",
        n_queries=30,
        models=pair,
        samples=1,
        offset=300,
        seed=4,
    )
    for row in mmlu:
        row["meta"]["contaminated"] = False
    _write(root / "routellm-mmlu.jsonl.gz", mmlu)
    llm = _rows(
        dataset="math",
        split="train",
        prefix="llmrouter-train",
        n_queries=30,
        models={"lo": (0.6, 0.1), "hi": (0.9, 0.8), "llama3-chatqa-1.5-8b": (0, 0)},
        samples=1,
        offset=500,
        seed=5,
    )
    # One leaked row: the first GSM8K test question, re-cased and re-spaced.
    leak = dict(llm[0], query_id="llmrouter-train-leak", prompt="  " + _prompt(0, 0).upper())
    _write(root / "llmrouter.jsonl.gz", [*llm, leak, dict(leak, model="hi")])
    return root


# --------------------------------------------------------------------------- common


def test_normalize_text_catches_case_space_and_quote_duplicates() -> None:
    assert normalize_text("  It\u2019s   A Test ") == normalize_text("it's a test")
    rows = [
        Observation.from_dict(r)
        for r in _rows(
            dataset="gsm8k", split="train", prefix="q", n_queries=2, models={"m": (1, 1)}, samples=1
        )
    ]
    kept, dropped = drop_test_prompts(rows, [rows[0].prompt.upper()])
    assert dropped == 1 and [o.query_id for o in kept] == ["q-00001"]


def test_query_fold_is_seeded_and_stable() -> None:
    folds = [query_fold(f"q{i}", 5, seed=0) for i in range(200)]
    assert set(folds) == set(range(5))
    assert folds == [query_fold(f"q{i}", 5, seed=0) for i in range(200)]
    assert folds != [query_fold(f"q{i}", 5, seed=1) for i in range(200)]


def test_paired_labels_index_every_row_and_score_the_extreme_pair() -> None:
    rows = [
        Observation.from_dict(r)
        for r in _rows(
            dataset="gsm8k",
            split="train",
            prefix="q",
            n_queries=6,
            models={"a": (0.2, 0.0), "b": (0.6, 0.4), "c": (1.0, 1.0)},
            samples=4,
        )
    ]
    assert model_pairs(rows, "extreme") == [("a", "c")]
    stacked = paired_labels([rows], "dars", "all", min_gap=0.0)
    assert stacked.distinct_pairs() == (("a", "b"), ("a", "c"), ("b", "c"))
    assert stacked.models() == ("a", "b", "c")
    assert stacked.scored_pair() == ("a", "c")
    pairs = stacked.pair_indices()
    assert pairs.shape == (len(stacked), 2)
    for (w, s), block in zip(stacked.distinct_pairs(), np.split(pairs, 3), strict=True):
        assert {tuple(r) for r in block.tolist()} == {(stacked.models().index(s), "abc".index(w))}
    # Two sources: the first source's extreme pair is scored.
    other = [Observation.from_dict({**o.to_dict(), "model": "z" + o.model}) for o in rows]
    both = paired_labels([rows, other], "dars", "extreme")
    assert both.distinct_pairs() == (("a", "c"), ("za", "zc"))
    assert both.scored_pair() == ("a", "c")


# --------------------------------------------------------------------------- drivers


def test_dars_vs_single_shot_end_to_end(data_dir: Path, embed: Embedder, tmp_path: Path) -> None:
    local = tmp_path / "local.jsonl.gz"
    _write(
        local,
        _rows(
            dataset="gsm8k",
            split="test",
            prefix="local",
            n_queries=20,
            models={"tiny": (0.7, 0.1), "less-tiny": (0.9, 0.7)},
            samples=3,
            offset=700,
            responses=True,
        ),
    )
    settings = dars_vs_single_shot.Settings(
        n_draws=2,
        n_folds=2,
        transfer_pairs=(("weak-a", "strong-c"),),
        cv_sources=(dars_vs_single_shot.CvSource("re2", (("small", "big"),)),),
        local_file=str(local),
    )
    out = tmp_path / "reports"
    paths = dars_vs_single_shot.run(
        data_dir, out, settings=settings, embed=embed, argv=["--data", str(data_dir)]
    )
    text = paths["markdown"].read_text()
    assert text.startswith("# DARS vs single-shot")
    assert "python -m router_models.experiments.dars_vs_single_shot --data" in text
    assert "gsm8k-train-multi.jsonl.gz" in text and "Run time:" in text
    numbers = json.loads(paths["json"].read_text())
    names = [s["name"] for s in numbers["studies"]]
    assert names == ["weak-a vs strong-c", "re2: small vs big", "local: tiny vs less-tiny"]
    transfer = numbers["studies"][0]
    for kind in ("knn", "mlp", "mf", "sw_ranking"):
        cell = transfer["routers"][kind]
        assert cell["single-shot"]["APGR"]["n"] == 2
        assert set(cell) >= {"dars", "semantic-entropy", "single-shot"}
    # Hard and easy questions are far apart in embedding space: kNN with DARS labels sees it.
    assert transfer["routers"]["knn"]["dars"]["APGR"] > 60
    assert paths["png"].stat().st_size > 0


def test_dars_vs_single_shot_says_when_local_data_is_missing(
    data_dir: Path, embed: Embedder, tmp_path: Path
) -> None:
    settings = dars_vs_single_shot.Settings(
        routers=("knn",),
        n_draws=1,
        n_folds=2,
        transfer_pairs=(("weak-a", "strong-c"),),
        cv_sources=(),
        local_file=str(tmp_path / "absent.jsonl.gz"),
    )
    paths = dars_vs_single_shot.run(data_dir, tmp_path, settings=settings, embed=embed)
    assert "did not exist when this report was made: not run" in paths["markdown"].read_text()


def test_paper_protocol_end_to_end(data_dir: Path, embed: Embedder, tmp_path: Path) -> None:
    notes = tmp_path / "paper-protocol.notes.md"
    notes.write_text("## What the numbers show\n\nHand-written reading.\n")
    settings = paper_protocol.Settings(
        benchmarks=(
            paper_protocol.Benchmark(
                "GSM8K",
                "routellm-gsm8k.jsonl.gz",
                (
                    paper_protocol.TrainSource("gsm8k-train-multi.jsonl.gz"),
                    paper_protocol.LLMROUTER,
                ),
                1,
            ),
        ),
        n_draws=2,
    )
    paths = paper_protocol.run(data_dir, tmp_path, settings=settings, embed=embed)
    text = paths["markdown"].read_text()
    assert "Confidence-Driven MF | 42.94 | 63.53 | 41.89 | 75.34 | 50.06 | 78.38" in text
    assert text.rstrip().endswith("Hand-written reading.")
    (bench,) = json.loads(paths["json"].read_text())["benchmarks"]
    assert bench["n_test"] == 29 and bench["n_contaminated"] == 1
    llmrouter = bench["sources"][1]
    assert llmrouter["dropped_duplicates_of_test"] == 1
    assert llmrouter["models"] == 2  # the chatqa model is dropped
    assert len(bench["rows"]) == 12
    for kind, info in bench["mapping"].items():
        assert info["chosen"] in ("extreme", "all"), kind
    assert paths["png-GSM8K"].stat().st_size > 0


def test_pretrain_writes_a_loadable_default_router(
    data_dir: Path, embed: Embedder, tmp_path: Path
) -> None:
    settings = pretrain.Settings(n_folds=3, mlp_params={"hidden_layer_sizes": (16, 8)})
    paths = pretrain.run(data_dir, tmp_path, settings=settings, embed=embed)
    onnx_path = paths["onnx"]
    assert onnx_path.name == "default.onnx" and onnx_path.stat().st_size < 5_000_000
    meta = read_metadata(onnx_path)
    assert json.loads(meta[META_MODELS]) == {"cloud": pretrain.CLOUD, "edge": pretrain.EDGE}
    assert meta[META_LABEL_SCHEME] in ("dars", "single-shot")
    assert 0.0 <= float(meta[META_DEFAULT_THRESHOLD]) <= 1.0
    card = paths["markdown"].read_text()
    assert (
        card.startswith("# Model card") and "python -m router_models.experiments.pretrain" in card
    )
    numbers = json.loads((tmp_path / "default-metrics.json").read_text())
    assert numbers["onnx_vs_python_max_abs_diff"] < 1e-4
    # The shipped file ranks the held-out synthetic queries better than chance.
    held = numbers["heldout"]["all"]
    assert held["default.onnx"]["APGR"] > held["random"]["APGR"]
    truth = truth_from_observations(
        [
            Observation.from_dict(r)
            for r in _rows(
                dataset="gsm8k",
                split="test",
                prefix="x",
                n_queries=4,
                models={pretrain.EDGE: (1, 0), pretrain.CLOUD: (1, 1)},
                samples=1,
            )
        ],
        pretrain.EDGE,
        pretrain.CLOUD,
    )
    scores = load_router_scores(onnx_path, embed(list(truth.prompts)))
    assert scores.shape == (4,) and np.all((scores >= 0) & (scores <= 1))
