"""The held-out split by query: seeded, deterministic, disjoint by query, in config and CLI."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from router_models.cli import main
from router_models.config import ConfigError, load_config
from router_models.inputs import load_data
from router_models.observations import Observation, write_observations
from router_models.splits import Holdout, held_out, query_fold, split_by_query


def one_split_rows(n_queries: int) -> list[Observation]:
    """Two models x two decodes per query, every row ``split: test``."""
    return [
        Observation(
            dataset="toy", split="test", query_id=f"q{i}", prompt=f"What is {i} plus {i}?",
            model=model, score=float(s == 0), variant_id=0, sample_id=s, response=None,
        )
        for i in range(n_queries) for model in ("a", "b") for s in range(2)
    ]  # fmt: skip


def test_split_is_deterministic_per_seed_and_disjoint_by_query() -> None:
    rows = one_split_rows(200)
    train, test = split_by_query(rows, 0.25, seed=3)
    train_ids, test_ids = {o.query_id for o in train}, {o.query_id for o in test}
    assert not train_ids & test_ids
    assert train_ids | test_ids == {o.query_id for o in rows}
    assert len(train) + len(test) == len(rows)
    assert 30 <= len(test_ids) <= 70  # about a quarter of 200 queries
    shuffled = list(rows)
    random.Random(0).shuffle(shuffled)
    again = split_by_query(shuffled, 0.25, seed=3)[1]
    assert {o.query_id for o in again} == test_ids  # row order does not matter
    other = {o.query_id for o in split_by_query(rows, 0.25, seed=4)[1]}
    assert other != test_ids  # another seed, another split


def test_adding_queries_never_moves_old_ones() -> None:
    small = {o.query_id for o in split_by_query(one_split_rows(50), 0.3, seed=0)[1]}
    large = {o.query_id for o in split_by_query(one_split_rows(150), 0.3, seed=0)[1]}
    assert small == {q for q in large if int(q[1:]) < 50}


def test_holdout_sides_and_seed_fallback() -> None:
    holdout = Holdout(0.4)
    for i in range(50):
        qid = f"q{i}"
        assert holdout.keeps(qid, "test", seed=7) != holdout.keeps(qid, "train", seed=7)
        assert holdout.keeps(qid, "test", seed=7) == held_out(qid, 0.4, 7)
        assert Holdout(0.4, seed=7).keeps(qid, "test", seed=99) == held_out(qid, 0.4, 7)
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="fraction"):
            Holdout(bad)
    assert query_fold("q1", 5, 0) in range(5)


def test_config_holdout_lets_test_default_to_train(tmp_path: Path) -> None:
    base = {"models": {"weak": "a", "strong": "b"}, "seed": 5}
    config = load_config(
        {**base, "data": {"train": {"paths": ["x.jsonl"]}, "holdout": {"fraction": 0.2}}}
    )
    assert config.holdout == Holdout(0.2, None) and config.holdout_seed() == 5
    assert config.test.paths == ["x.jsonl"] and config.test is not config.train
    bare = load_config({**base, "data": {"train": {"paths": ["x"]}, "holdout": 0.3}})
    assert bare.holdout == Holdout(0.3) and bare.holdout_seed() == 5
    train = {"paths": ["x"]}
    seeded = load_config(
        {**base, "data": {"train": train, "holdout": {"fraction": 0.3, "seed": 1}}}
    )
    assert seeded.holdout_seed() == 1
    with pytest.raises(ConfigError, match="'train' and 'test'"):
        load_config({**base, "data": {"train": {"paths": ["x"]}}})
    with pytest.raises(ConfigError, match=r"data.holdout: .*fraction"):
        load_config({**base, "data": {"train": {"paths": ["x"]}, "holdout": 1.0}})
    with pytest.raises(ConfigError, match="unknown key"):
        load_config({**base, "data": {"train": train, "holdout": {"fraction": 0.2, "size": 3}}})


def test_load_data_sides_are_disjoint(tmp_path: Path) -> None:
    path = tmp_path / "obs.jsonl.gz"
    write_observations(path, one_split_rows(40))
    data = {"train": {"paths": [str(path)]}, "holdout": 0.25}
    config = load_config({"models": {"weak": "a", "strong": "b"}, "data": data})
    assert config.holdout is not None
    train = load_data(config.train, holdout=config.holdout, side="train", seed=0)
    test = load_data(config.test, holdout=config.holdout, side="test", seed=0)
    assert not {o.query_id for o in train} & {o.query_id for o in test}
    assert len(train) + len(test) == 40 * 4
    write_observations(path, one_split_rows(1))
    sides = [side for side in ("train", "test") if not config.holdout.keeps("q0", side)]
    with pytest.raises(ConfigError, match=rf"puts none of the 1 queries .* on the {sides[0]} side"):
        load_data(config.test, holdout=config.holdout, side=sides[0])


def test_cli_run_holdout_options_are_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "obs.jsonl"
    write_observations(path, one_split_rows(4))
    config = tmp_path / "run.yaml"
    config.write_text(
        f"output_dir: {tmp_path / 'out'}\nmodels: {{weak: a, strong: b}}\n"
        f"data: {{train: {{paths: [{path}]}}, test: {{paths: [{path}]}}}}\n"
    )
    assert main(["run", "--config", str(config), "--holdout", "1.5"]) == 2
    assert "--holdout: held-out fraction must be in (0, 1), got 1.5" in capsys.readouterr().err
    assert main(["run", "--config", str(config), "--holdout-seed", "3"]) == 2
    assert "--holdout-seed needs --holdout" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
