"""Label schemes on small synthetic observations with known answers."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from router_models.labels import (
    LabelSet,
    capability_stats,
    choose_pair,
    cluster_responses,
    concat_label_sets,
    dars_labels,
    load_labels,
    make_labels,
    model_means,
    model_pairs,
    multi_pair_labels,
    pair_observations,
    prob_beta_greater,
    semantic_entropy,
    semantic_entropy_labels,
    single_shot_labels,
)
from router_models.observations import Observation


def obs(
    query: str,
    model: str,
    score: float,
    *,
    variant: int = 0,
    sample: int = 0,
    response: str | None = None,
    dataset: str = "gsm8k",
    cost: float | None = None,
) -> Observation:
    return Observation(
        dataset=dataset, split="train", query_id=query, prompt=f"prompt of {query}",
        model=model, score=score, variant_id=variant, sample_id=sample, response=response,
        cost=cost,
    )  # fmt: skip


def pair_rows(
    query: str, model: str, scores_by_variant: Sequence[Sequence[float]], **kw: object
) -> list[Observation]:
    return [
        obs(query, model, s, variant=v, sample=i, **kw)  # type: ignore[arg-type]
        for v, scores in enumerate(scores_by_variant)
        for i, s in enumerate(scores)
    ]


# ------------------------------------------------------------------ capability statistics


def test_capability_stats_split_variance_by_law_of_total_variance() -> None:
    rows = pair_rows("q", "m", [[1, 1, 0, 0], [1, 1, 1, 1]])
    mu, sigma, count, var_in, var_out = capability_stats(rows)
    assert count == 8
    assert mu == pytest.approx(0.75)
    assert sigma == pytest.approx(math.sqrt(0.75 * 0.25))
    assert var_in == pytest.approx(0.0625)  # variant means 0.5 and 1.0 around 0.75
    assert var_out == pytest.approx(0.125)  # within: 0.25 and 0, each half the rows
    assert var_in + var_out == pytest.approx(sigma**2)


def test_capability_stats_pure_input_and_pure_output_noise() -> None:
    *_, var_in, var_out = capability_stats(pair_rows("q", "m", [[1, 1], [0, 0]]))
    assert (var_in, var_out) == (pytest.approx(0.25), pytest.approx(0.0))
    *_, var_in, var_out = capability_stats(pair_rows("q", "m", [[1, 0], [1, 0]]))
    assert (var_in, var_out) == (pytest.approx(0.0), pytest.approx(0.25))


def test_label_set_carries_per_model_stats() -> None:
    rows = pair_rows("q", "weak", [[0, 1], [0, 0]]) + pair_rows("q", "strong", [[1, 1], [1, 0]])
    labels = dars_labels(rows, "weak", "strong")
    assert labels.weak.mu.tolist() == [0.25] and labels.strong.mu.tolist() == [0.75]
    assert labels.weak.count.tolist() == [4]
    assert labels.strong.var_input[0] + labels.strong.var_output[0] == pytest.approx(0.1875)


def test_pairs_need_both_models() -> None:
    rows = [obs("a", "weak", 1), obs("a", "strong", 1), obs("b", "weak", 0)]
    assert [p.query_id for p in pair_observations(rows, "weak", "strong")] == ["a"]
    with pytest.raises(ValueError, match="must differ"):
        pair_observations(rows, "weak", "weak")
    with pytest.raises(ValueError, match="no query"):
        pair_observations(rows, "weak", "other")


# ------------------------------------------------------------------ dars


def test_prob_beta_greater_known_values() -> None:
    # X ~ Beta(2,1) (pdf 2x) vs Y ~ Beta(1,2): P(X > Y) = 5/6.
    assert prob_beta_greater(2, 1, 1, 2)[0] == pytest.approx(5 / 6, abs=1e-3)
    assert prob_beta_greater(3, 3, 3, 3)[0] == pytest.approx(0.5, abs=1e-3)
    # Monte-Carlo cross-check with a shift.
    rng = np.random.default_rng(0)
    x, y = rng.beta(8, 3, 400_000), rng.beta(4, 5, 400_000)
    assert prob_beta_greater(8, 3, 4, 5, 0.1)[0] == pytest.approx(np.mean(x - y > 0.1), abs=3e-3)
    assert prob_beta_greater(5, 1, 1, 5, 1.0)[0] == pytest.approx(0.0, abs=1e-9)


def test_dars_soft_label_of_single_observations() -> None:
    rows = [obs("q", "weak", 0), obs("q", "strong", 1)]
    labels = dars_labels(rows, "weak", "strong", lam=0.0, beta=0.0)
    assert labels.target[0] == pytest.approx(5 / 6, abs=1e-3)
    # Cost rank: weak 0, strong 1 -> the strong model must beat the weak one by lambda.
    costly = dars_labels(rows, "weak", "strong", lam=0.05, beta=0.0)
    assert costly.target[0] == pytest.approx(prob_beta_greater(2, 1, 1, 2, 0.05)[0])
    assert costly.target[0] < labels.target[0]
    assert costly.params["cost_source"] == "rank"


def test_dars_identical_distributions_give_one_half() -> None:
    rows = pair_rows("q", "weak", [[1, 0, 1, 0]]) + pair_rows("q", "strong", [[0, 1, 0, 1]])
    labels = dars_labels(rows, "weak", "strong", lam=0.0, beta=0.0)
    assert labels.target[0] == pytest.approx(0.5, abs=1e-3)


def test_dars_risk_penalty_uses_sigma() -> None:
    # Same mean 0.5; the strong model is erratic (sigma 0.5), the weak one steady? Binary
    # scores always have sigma sqrt(p(1-p)); use fractional scores for a steady model.
    rows = pair_rows("q", "weak", [[0.5] * 8]) + pair_rows("q", "strong", [[1, 0] * 4])
    no_risk = dars_labels(rows, "weak", "strong", lam=0.0, beta=0.0)
    risk = dars_labels(rows, "weak", "strong", lam=0.0, beta=0.2)
    assert no_risk.target[0] == pytest.approx(0.5, abs=1e-9)
    assert risk.target[0] < 0.5
    assert risk.extra["shift"][0] == pytest.approx(0.2 * 0.5)


def test_dars_gaussian_path_for_fractional_scores() -> None:
    from scipy.special import ndtr

    rows = pair_rows("q", "weak", [[0.2, 0.4]]) + pair_rows("q", "strong", [[0.6, 0.8]])
    labels = dars_labels(rows, "weak", "strong", lam=0.0, beta=0.0)

    def moments(xs: list[float]) -> tuple[float, float]:
        aug = np.asarray([*xs, 1.0, 0.0])  # the Beta(1,1) prior as two pseudo-observations
        return aug.mean(), aug.var() / len(aug)

    (m_w, v_w), (m_s, v_s) = moments([0.2, 0.4]), moments([0.6, 0.8])
    assert labels.target[0] == pytest.approx(ndtr((m_s - m_w) / math.sqrt(v_s + v_w)))


def test_dars_more_observations_are_surer() -> None:
    rows = [obs("few", "weak", 0), obs("few", "strong", 1)]
    rows += pair_rows("many", "weak", [[0] * 10, [0] * 10]) + pair_rows(
        "many", "strong", [[1] * 10, [1] * 10]
    )
    labels = dars_labels(rows, "weak", "strong")
    few, many = labels.query_ids.index("few"), labels.query_ids.index("many")
    assert labels.target[many] > 0.99 > labels.target[few]
    assert labels.weight[many] > labels.weight[few]
    assert labels.weight.mean() == pytest.approx(1.0)
    confidence = dars_labels(rows, "weak", "strong", weighting="confidence")
    assert confidence.weight == pytest.approx(np.abs(2 * confidence.target - 1))
    with pytest.raises(ValueError, match="weighting"):
        dars_labels(rows, "weak", "strong", weighting="bogus")  # type: ignore[arg-type]


def test_dars_costs_prices_and_observed() -> None:
    rows = [obs("q", "weak", 1, cost=1.0), obs("q", "strong", 1, cost=4.0)]
    observed = dars_labels(rows, "weak", "strong")
    assert observed.params["cost_source"] == "observed"
    assert (observed.weak.cost[0], observed.strong.cost[0]) == (0.25, 1.0)
    priced = dars_labels(rows, "weak", "strong", costs={"weak": 0.0, "strong": 10.0})
    assert priced.params["cost_source"] == "prices"
    assert (priced.weak.cost[0], priced.strong.cost[0]) == (0.0, 1.0)
    with pytest.raises(ValueError, match="missing for model"):
        dars_labels(rows, "weak", "strong", costs={"weak": 1.0})


def test_costs_are_normalised_per_dataset() -> None:
    rows = [obs("a", "weak", 1, cost=1.0), obs("a", "strong", 1, cost=2.0)]
    rows += [
        obs("b", "weak", 1, cost=10.0, dataset="mmlu"),
        obs("b", "strong", 1, cost=40.0, dataset="mmlu"),
    ]
    labels = dars_labels(rows, "weak", "strong")
    assert labels.strong.cost.tolist() == [1.0, 1.0]
    assert labels.weak.cost.tolist() == [0.5, 0.25]


# ------------------------------------------------------------------ single-shot


def noisy_rows(n_queries: int = 30) -> list[Observation]:
    rng = np.random.default_rng(7)
    rows = []
    for q in range(n_queries):
        for model, p in (("weak", 0.4), ("strong", 0.7)):
            scores = (rng.random((2, 5)) < p).astype(float)
            rows += pair_rows(f"q{q}", model, scores.tolist())
    return rows


def test_single_shot_is_reproducible_per_seed_and_order_free() -> None:
    rows = noisy_rows()
    a = single_shot_labels(rows, "weak", "strong", seed=3)
    b = single_shot_labels(list(reversed(rows)), "weak", "strong", seed=3)
    assert dict(zip(a.query_ids, a.target, strict=True)) == dict(
        zip(b.query_ids, b.target, strict=True)
    )
    others = [single_shot_labels(rows, "weak", "strong", seed=s).target for s in range(1, 4)]
    assert any(not np.array_equal(a.target, o) for o in others)
    assert set(np.unique(a.target)) <= {0.0, 1.0}
    assert np.all(a.weight == 1.0)


def test_single_shot_win_loss_tie() -> None:
    rows = [obs("win", "weak", 0), obs("win", "strong", 1), obs("loss", "weak", 1)]
    rows += [obs("loss", "strong", 0), obs("tie", "weak", 1), obs("tie", "strong", 1)]
    labels = single_shot_labels(rows, "weak", "strong")
    assert dict(zip(labels.query_ids, labels.target.tolist(), strict=True)) == {
        "win": 1.0, "loss": 0.0, "tie": 0.0,
    }  # fmt: skip
    half = single_shot_labels(rows, "weak", "strong", tie_target=0.5)
    assert half.target[half.query_ids.index("tie")] == 0.5
    with pytest.raises(ValueError, match="tie_target"):
        single_shot_labels(rows, "weak", "strong", tie_target=2.0)


def test_single_shot_uses_one_drawn_observation() -> None:
    # Strong: correct on variant 0 only; the drawn single observation decides the label.
    rows = pair_rows("q", "weak", [[0, 0]]) + pair_rows("q", "strong", [[1, 0]])
    targets = {
        float(single_shot_labels(rows, "weak", "strong", seed=s).target[0]) for s in range(20)
    }
    assert targets == {0.0, 1.0}


# ------------------------------------------------------------------ semantic entropy


def test_semantic_entropy_estimators() -> None:
    labels = ["a", "a", "a", "b"]
    assert semantic_entropy(labels, "paper") == pytest.approx(
        -(math.log(0.75) + math.log(0.25)) / 2
    )
    assert semantic_entropy(labels, "discrete") == pytest.approx(
        -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    )
    assert semantic_entropy(["x"] * 5) == 0.0


def test_cluster_by_extracted_answer() -> None:
    rows = [
        obs("q", "m", 1, sample=0, response="so 9*2 = 18\n#### 18"),
        obs("q", "m", 1, sample=1, response="The answer is 18.00"),
        obs("q", "m", 0, sample=2, response="#### 17"),
        obs("q", "m", 0, sample=3, response="I do not know"),
        obs("q", "m", 0, sample=4, response=None),
    ]
    labels = cluster_responses(rows)
    assert labels[0] == labels[1] == "answer:18"
    assert labels[2] == "answer:17"
    assert labels[3].startswith("unparsed:")
    assert labels[4] == "score:0.0"


def test_cluster_by_embedding_and_nli() -> None:
    rows = [
        obs("q", "m", 1, sample=i, response=t, dataset="mt-bench")
        for i, t in enumerate(["aa", "ab", "ba"])
    ]

    def embed(texts: list[str]) -> np.ndarray:
        return np.asarray([[1.0, 0.0] if t[0] == "a" else [0.0, 1.0] for t in texts])

    by_embedding = cluster_responses(rows, embed=embed)
    assert by_embedding[0] == by_embedding[1] != by_embedding[2]
    by_nli = cluster_responses(rows, mode="nli", nli=lambda x, y: x[-1] == y[-1])
    assert by_nli[0] == by_nli[2] != by_nli[1]
    by_text = cluster_responses(rows)
    assert len(set(by_text)) == 3
    with pytest.raises(ValueError, match="needs an embed"):
        cluster_responses(rows, mode="embedding")


def test_semantic_entropy_labels_winner_and_ties() -> None:
    certain = ["#### 18"] * 4
    unsure = ["#### 18", "#### 18", "#### 17", "#### 5"]
    rows = []
    for query, weak_texts, strong_texts in (
        ("strong-wins", unsure, certain),
        ("weak-wins", certain, unsure),
        ("tie", unsure, unsure),
        ("both-certain", certain, certain),
    ):
        for model, texts in (("weak", weak_texts), ("strong", strong_texts)):
            rows += [obs(query, model, 1.0, sample=i, response=t) for i, t in enumerate(texts)]
    labels = semantic_entropy_labels(rows, "weak", "strong", tau=0.1)
    got = dict(zip(labels.query_ids, labels.target.tolist(), strict=True))
    assert got == {"strong-wins": 1.0, "weak-wins": 0.0, "tie": 0.0, "both-certain": 0.0}
    assert labels.extra["se_weak"][0] > 0 and labels.extra["se_strong"][0] == 0
    half = semantic_entropy_labels(rows, "weak", "strong", tie_target=0.5)
    assert half.target[half.query_ids.index("tie")] == 0.5


def test_semantic_entropy_tau_decides_ties() -> None:
    # SE_weak (3 of 4 agree) vs SE_strong (2 of 4 agree): delta = |SE_s - SE_w| / SE_s.
    rows = [obs("q", "weak", 1, sample=i, response=f"#### {a}") for i, a in enumerate([1, 1, 1, 2])]
    rows += [
        obs("q", "strong", 1, sample=i, response=f"#### {a}") for i, a in enumerate([1, 1, 2, 2])
    ]
    se_w = semantic_entropy(["1", "1", "1", "2"])
    se_s = semantic_entropy(["1", "1", "2", "2"])
    delta = abs(se_s - se_w) / se_s
    # Weak has the *higher* paper-SE here (rare cluster weighs more), so above tau weak loses.
    assert se_w > se_s
    loose = semantic_entropy_labels(rows, "weak", "strong", tau=delta - 0.01, tie_target=0.5)
    strict = semantic_entropy_labels(rows, "weak", "strong", tau=delta + 0.01, tie_target=0.5)
    assert (loose.target[0], strict.target[0]) == (1.0, 0.5)


def test_semantic_entropy_without_responses_uses_scores() -> None:
    rows = pair_rows("q", "weak", [[1, 0, 1, 0]]) + pair_rows("q", "strong", [[1, 1, 1, 1]])
    labels = semantic_entropy_labels(rows, "weak", "strong")
    assert labels.target[0] == 1.0


# ------------------------------------------------------------------ dispatch, pairs, files


def test_make_labels_dispatch() -> None:
    rows = noisy_rows(5)
    for scheme in ("single-shot", "dars", "semantic-entropy"):
        labels = make_labels(rows, "weak", "strong", scheme)
        assert labels.scheme == scheme and len(labels) == 5
        assert np.all((labels.target >= 0) & (labels.target <= 1)) and np.all(labels.weight >= 0)
    with pytest.raises(ValueError, match="unknown label scheme"):
        make_labels(rows, "weak", "strong", "votes")


def test_choose_pair_and_multi_pair() -> None:
    rows = []
    for q in range(4):
        rows += [obs(f"q{q}", "low", 0), obs(f"q{q}", "mid", q % 2), obs(f"q{q}", "high", 1)]
    assert model_means(rows) == {"high": 1.0, "low": 0.0, "mid": 0.5}
    assert choose_pair(rows) == ("low", "high")
    assert choose_pair(rows, strong="mid") == ("low", "mid")
    assert choose_pair(rows, weak="high") == ("high", "mid")
    with pytest.raises(ValueError, match="not in the observations"):
        choose_pair(rows, weak="nope")
    stacked = multi_pair_labels(rows, "dars")
    assert len(stacked) == 12  # (low, mid), (low, high), (mid, high) x 4 queries
    assert stacked.params["pairs"] == [["low", "mid"], ["low", "high"], ["mid", "high"]]
    assert stacked.weak_model == "low+mid" and stacked.strong_model == "mid+high"
    assert len(stacked.extra["shift"]) == 12


def test_multi_pair_labels_keep_each_rows_pair_through_save_and_load(tmp_path: Path) -> None:
    rows = []
    for q in range(4):
        rows += [obs(f"q{q}", "low", 0), obs(f"q{q}", "mid", q % 2), obs(f"q{q}", "high", 1)]
    stacked = multi_pair_labels(rows, "dars")
    assert stacked.distinct_pairs() == (("low", "mid"), ("low", "high"), ("mid", "high"))
    assert stacked.pair_of_rows() == tuple(p for p in stacked.distinct_pairs() for _ in range(4))
    assert stacked.models() == ("low", "mid", "high")
    assert stacked.scored_pair() == ("low", "high")  # the extreme pair, not the first one
    assert stacked.pair_indices()[:5].tolist() == [[1, 0]] * 4 + [[2, 0]]
    path = tmp_path / "stacked.json"
    stacked.save(path)
    back = load_labels(path)
    assert back.row_pairs == stacked.row_pairs and back.score_pair == ("low", "high")
    assert back.pair_indices().tolist() == stacked.pair_indices().tolist()
    subset = back.take([0, 11])
    assert subset.row_pairs == (("low", "mid"), ("mid", "high"))
    assert subset.scored_pair() == ("low", "high")
    # Listed pairs score the first; stacking keeps the first set's scored pair.
    listed = multi_pair_labels(rows, "dars", [("mid", "high"), ("low", "high")])
    assert listed.scored_pair() == ("mid", "high")
    again = concat_label_sets([stacked, listed])
    assert again.scored_pair() == ("low", "high") and len(again.row_pairs or ()) == 20
    assert again.params["pairs"] == [["low", "mid"], ["low", "high"], ["mid", "high"]]
    assert model_pairs(rows, "all", min_gap=0.6) == [("low", "high")]
    assert model_pairs(rows, "extreme") == [("low", "high")]
    with pytest.raises(ValueError, match="unknown pair mapping"):
        model_pairs(rows, "nearest")


def test_single_pair_label_files_have_no_pair_record(tmp_path: Path) -> None:
    labels = dars_labels(noisy_rows(3), "weak", "strong")
    data = labels.to_dict()
    assert "score_pair" not in data and "pair" not in data["rows"][0]
    path = tmp_path / "single.json"
    labels.save(path)
    back = load_labels(path)
    assert back.row_pairs is None and back.score_pair is None
    assert back.scored_pair() == ("weak", "strong") and back.models() == ("weak", "strong")
    assert back.pair_indices().tolist() == [[1, 0]] * 3


def test_label_file_round_trip(tmp_path: Path) -> None:
    labels = dars_labels(noisy_rows(6), "weak", "strong")
    path = tmp_path / "labels.json"
    labels.save(path)
    back = load_labels(path)
    assert isinstance(back, LabelSet)
    assert back.query_ids == labels.query_ids and back.prompts == labels.prompts
    assert back.target == pytest.approx(labels.target)
    assert back.weak.count.tolist() == labels.weak.count.tolist()
    assert back.extra["shift"] == pytest.approx(labels.extra["shift"])
    assert back.params == labels.params
    subset = labels.take([0, 2])
    assert subset.query_ids == (labels.query_ids[0], labels.query_ids[2])
    assert subset.strong.mu.tolist() == labels.strong.mu[[0, 2]].tolist()
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="not a label file"):
        load_labels(tmp_path / "bad.json")
