"""Labels over K models: per-cell mean, spread, count; missing cells; single-shot draws."""

from __future__ import annotations

import numpy as np
import pytest

from router_models.labels import quality_labels, single_shot_labels
from router_models.observations import Observation


def _obs(query: str, model: str, score: float, sample: int = 0, variant: int = 0) -> Observation:
    return Observation(
        dataset="toy",
        split="train",
        query_id=query,
        prompt=f"prompt of {query}",
        model=model,
        score=score,
        variant_id=variant,
        sample_id=sample,
        response="x" * (10 * (sample + 1)),
    )


ROWS = [
    # q1: a answers 4 times (3 right), b twice (both wrong), c never.
    *(_obs("q1", "a", s, sample=i) for i, s in enumerate([1.0, 1.0, 0.0, 1.0])),
    _obs("q1", "b", 0.0, sample=0),
    _obs("q1", "b", 0.0, sample=1),
    # q2: only c, once.
    _obs("q2", "c", 0.5),
]


def test_dars_cells_hold_mean_spread_and_count() -> None:
    labels = quality_labels(ROWS, ["a", "b", "c"])
    assert labels.query_ids == ("q1", "q2")
    np.testing.assert_allclose(labels.mean[0, :2], [0.75, 0.0])
    np.testing.assert_allclose(labels.std[0, :2], [np.sqrt(0.75 * 0.25), 0.0])
    np.testing.assert_array_equal(labels.count, [[4, 2, 0], [0, 0, 1]])
    # Missing cells are NaN and masked out.
    assert np.isnan(labels.mean[0, 2]) and np.isnan(labels.mean[1, 0])
    np.testing.assert_array_equal(labels.mask, [[True, True, False], [False, False, True]])
    assert not labels.complete().any()
    # Response length is the mean of the cell's texts (10, 20, 30, 40 chars -> 25).
    assert labels.response_chars[0, 0] == pytest.approx(25.0)


def test_cell_weights_follow_counts_and_vanish_where_missing() -> None:
    weights = quality_labels(ROWS, ["a", "b", "c"]).cell_weights()
    mean_count = (4 + 2 + 1) / 3
    np.testing.assert_allclose(weights, np.array([[4, 2, 0], [0, 0, 1]]) / mean_count)


def test_single_shot_draws_one_observation_like_the_pair_labels() -> None:
    for seed in range(6):
        labels = quality_labels(ROWS, ["a", "b"], scheme="single-shot", seed=seed)
        np.testing.assert_array_equal(labels.count[0], [1, 1])
        assert labels.mean[0, 0] in (0.0, 1.0) and labels.std[0, 0] == 0.0
        pair = single_shot_labels(ROWS, "b", "a", seed=seed)
        # b always scores 0, so the pair target is exactly a's drawn score.
        assert pair.target[0] == labels.mean[0, 0]
    drawn = {
        quality_labels(ROWS, ["a"], scheme="single-shot", seed=s).mean[0, 0] for s in range(20)
    }
    assert drawn == {0.0, 1.0}  # the draw really varies with the seed


def test_model_order_and_selection_are_respected() -> None:
    labels = quality_labels(ROWS, ["c", "a"])
    assert labels.models == ("c", "a")
    np.testing.assert_array_equal(labels.count, [[0, 4], [1, 0]])
    assert quality_labels(ROWS).models == ("a", "b", "c")
    only_b = quality_labels(ROWS, ["b"])
    assert only_b.query_ids == ("q1",)  # q2 has no cell of b


def test_take_and_bad_arguments() -> None:
    labels = quality_labels(ROWS, ["a", "b", "c"])
    sub = labels.take([1])
    assert sub.query_ids == ("q2",) and sub.mean.shape == (1, 3)
    with pytest.raises(ValueError, match="scheme"):
        quality_labels(ROWS, scheme="entropy")
    with pytest.raises(ValueError, match="distinct"):
        quality_labels(ROWS, ["a", "a"])
    with pytest.raises(ValueError, match="no observation"):
        quality_labels(ROWS, ["zzz"])
