"""Stacked model pairs through the pipeline: pair-native routers learn every pair of the rows.

Three made-up models on made-up queries: ``small`` fails the hard (calculus) questions, ``mid``
fails half of them, ``large`` solves everything; all solve the easy (counting) ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from router_models.cli import main
from router_models.config import ConfigError
from router_models.features import Embedder
from router_models.observations import Observation, write_observations
from router_models.pipeline import build_labels, train_router

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

RATES = {"small": (1.0, 0.0), "mid": (1.0, 0.5), "large": (1.0, 1.0)}  # (easy, hard)


def _rows(n_queries: int = 12, samples: int = 4) -> list[Observation]:
    rows = []
    for i in range(n_queries):
        hard = i % 2 == 0
        prompt = (
            f"Evaluate the integral of x^{i + 2} sin(x) from 0 to pi by parts."
            if hard
            else f"Tom has {i} apples and buys {i + 3} more. How many apples now?"
        )
        for model, (easy_rate, hard_rate) in RATES.items():
            correct = round((hard_rate if hard else easy_rate) * samples)
            for s in range(samples):
                rows.append(
                    Observation(
                        dataset="toy", split="train", query_id=f"q{i:02d}", prompt=prompt,
                        model=model, score=float(s < correct), variant_id=0, sample_id=s,
                        response=None,
                    )
                )  # fmt: skip
    return rows


@pytest.fixture(scope="module")
def embed(encoder: SentenceTransformer, tmp_path_factory: pytest.TempPathFactory) -> Embedder:
    cache = tmp_path_factory.mktemp("cache")
    return Embedder(encoder=encoder, cache_dir=cache, progress=False, device="cpu")


@pytest.mark.parametrize(
    ("kind", "params"),
    [("mf", {"n_factors": 4, "max_iter": 30}), ("sw_ranking", {})],
)
def test_pair_native_routers_fit_every_pair(
    kind: str, params: dict[str, int], embed: Embedder
) -> None:
    rows = _rows()
    labels = build_labels(rows, weak="mid", strong="large", scheme="dars", pairs="all")
    assert labels.distinct_pairs() == (("small", "mid"), ("small", "large"), ("mid", "large"))
    assert labels.scored_pair() == ("mid", "large")  # the deployed pair is among the models
    router = train_router(labels, embed, kind=kind, params=params, seed=0)
    estimator = router.estimator
    assert estimator.n_models_ == 3
    assert router.models == ("small", "mid", "large")
    assert (router.models[estimator.weak_index], router.models[estimator.strong_index]) == (
        "mid",
        "large",
    )
    assert (router.weak_model, router.strong_model) == ("mid", "large")
    X = embed(list(dict.fromkeys(labels.prompts)))
    scores = router.predict(X)
    assert np.all((scores >= 0) & (scores <= 1))
    hard = np.array([p.startswith("Evaluate") for p in dict.fromkeys(labels.prompts)])
    assert scores[hard].mean() > scores[~hard].mean()


def test_other_routers_and_single_pairs_keep_strong_vs_weak(embed: Embedder) -> None:
    rows = _rows()
    stacked = build_labels(rows, weak=None, strong=None, scheme="dars", pairs="all")
    assert stacked.scored_pair() == ("small", "large")
    knn = train_router(stacked, embed, kind="knn", params={"n_neighbors": 3})
    assert (knn.weak_model, knn.strong_model) == ("small", "large")
    assert knn.n_train == len(stacked) == 3 * 12
    single = build_labels(rows, weak="small", strong="large", scheme="dars")
    mf = train_router(single, embed, kind="mf", params={"n_factors": 4, "max_iter": 5})
    assert mf.estimator.n_models_ == 2 and mf.models == ("small", "large")


def test_saved_stacked_labels_train_the_same_pair(embed: Embedder, tmp_path: Path) -> None:
    from router_models.labels import load_labels

    labels = build_labels(_rows(), weak="mid", strong="large", scheme="dars", pairs="all")
    labels.save(tmp_path / "labels.json")
    router = train_router(load_labels(tmp_path / "labels.json"), embed, kind="sw_ranking")
    assert router.estimator.n_models_ == 3
    assert (router.weak_model, router.strong_model) == ("mid", "large")


def test_by_mean_refuses_a_named_pair_it_would_override() -> None:
    """``pairs: by-mean`` used to replace ``models`` silently, even when the data held them."""
    rows = _rows()
    with pytest.raises(ConfigError, match=r"by-mean would train on small -> large .* mid -> large"):
        build_labels(rows, weak="mid", strong="large", scheme="dars", pairs="by-mean")
    same = build_labels(rows, weak="small", strong="large", scheme="dars", pairs="by-mean")
    assert same.scored_pair() == ("small", "large")
    # The deployed pair is not in the training data (the shipped GSM8K config): by-mean picks.
    other = build_labels(rows, weak="edge-x", strong="cloud-y", scheme="dars", pairs="by-mean")
    assert other.scored_pair() == ("small", "large")


def test_cli_labels_refuses_by_mean_with_named_models(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "rows.jsonl"
    write_observations(data, _rows())
    argv = ["labels", "--data", str(data), "--pairs", "by-mean", "--weak", "mid"]
    assert main([*argv, "--out", str(tmp_path / "l.json"), "--no-progress"]) == 2
    assert "--pairs by-mean picks the weakest and strongest model itself" in capsys.readouterr().err
    assert not (tmp_path / "l.json").exists()
