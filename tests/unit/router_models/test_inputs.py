"""A run's inputs are checked before anything is written, and empty data says why.

A first run from a clone used to leave an empty output folder behind on a missing file, and
the test-leak guard answered "no scored observations ... after filtering" without naming itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from router_models.cli import main
from router_models.config import ConfigError, load_config
from router_models.evaluate import truth_from_observations
from router_models.inputs import check_inputs, guard_test_leaks, load_data
from router_models.observations import Observation, write_observations
from router_models.pipeline import run_pipeline

WEAK, STRONG = "edge-m", "cloud-m"


def one_split_rows(n_queries: int = 8, split: str = "test") -> list[Observation]:
    """Every row in one split, as in the bundled dataset; two decodes per model."""
    return [
        Observation(
            dataset="toy", split=split, query_id=f"q{i}", prompt=f"What is {i} plus {i}?",
            model=model, score=float(model == STRONG or s == 0), variant_id=0, sample_id=s,
            response=None,
        )
        for i in range(n_queries) for model in (WEAK, STRONG) for s in range(2)
    ]  # fmt: skip


def config_for(tmp_path: Path, train: list[str], test: list[str] | None, **extra: Any) -> Any:
    data: dict[str, Any] = {"train": {"paths": train}}
    if test is not None:
        data["test"] = {"paths": test}
    data.update(extra.pop("data", {}))
    return load_config(
        {
            "output_dir": str(tmp_path / "runs" / "out"),
            "models": {"weak": WEAK, "strong": STRONG},
            "data": data,
            **extra,
        }
    )


def test_missing_inputs_are_all_named_and_nothing_is_created(tmp_path: Path) -> None:
    config = config_for(
        tmp_path,
        [str(tmp_path / "shared" / "train.jsonl.gz")],
        [str(tmp_path / "shared" / "test.jsonl.gz")],
        labels={"scheme": "semantic-entropy", "params": {"nli_model": str(tmp_path / "nli")}},
    )
    with pytest.raises(ConfigError) as info:
        run_pipeline(config, progress=False)
    message = str(info.value)
    assert "nothing was written" in message
    assert f"data.train.paths: {tmp_path / 'shared' / 'train.jsonl.gz'} does not exist" in message
    assert f"data.test.paths: {tmp_path / 'shared' / 'test.jsonl.gz'} does not exist" in message
    assert f"labels.params.nli_model: {tmp_path / 'nli'} does not exist" in message
    assert "quickstart-local.yaml" in message and "docs/observations.md" in message
    assert not (tmp_path / "runs").exists()


def test_cli_run_with_missing_data_exits_2_and_leaves_no_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(
        f"output_dir: {tmp_path / 'runs' / 'x'}\n"
        "models: {weak: a, strong: b}\n"
        "data:\n"
        "  train: {paths: [../shared/data/gsm8k-train-multi-missing.jsonl.gz]}\n"
        "  test: {paths: [../shared/data/routellm-gsm8k-missing.jsonl.gz]}\n"
    )
    assert main(["run", "--config", str(config), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "gsm8k-train-multi-missing.jsonl.gz does not exist" in err
    assert "routellm-gsm8k-missing.jsonl.gz does not exist" in err
    assert not (tmp_path / "runs").exists()


def test_bad_data_fails_before_the_output_dir_exists(tmp_path: Path) -> None:
    """Files exist but the split filter empties them: the error names the filter and the
    files' splits, suggests the held-out split, and nothing is created."""
    data = tmp_path / "obs.jsonl"
    write_observations(data, one_split_rows())
    config = config_for(tmp_path, [str(data)], [str(data)])
    config.train.splits = ["train"]
    with pytest.raises(ConfigError) as info:
        run_pipeline(config, progress=False)
    message = str(info.value)
    assert "splits=['train']" in message and "'test': 32" in message
    assert "holdout" in message
    assert not (tmp_path / "runs").exists()


def test_leak_guard_says_what_it_removed_and_suggests_holdout(tmp_path: Path) -> None:
    data = tmp_path / "obs.jsonl"
    write_observations(data, one_split_rows())
    config = config_for(tmp_path, [str(data)], [str(data)])
    with pytest.raises(ConfigError) as info:
        run_pipeline(config, progress=False)
    message = str(info.value)
    assert "test-leak guard" in message
    assert "removed 32 training observations of 8 queries" in message
    assert "8 by query id, 0 more by identical prompt" in message
    assert "holdout" in message and "--holdout" in message
    assert not (tmp_path / "runs").exists()


def test_leak_guard_counts_prompt_matches_and_reports_partial_removal(tmp_path: Path) -> None:
    rows = one_split_rows(4)
    test_rows = [o for o in rows if o.query_id in ("q0", "q1")]
    # q2's prompt reappears under another id in the test set: dropped by the prompt rule.
    test_rows.append(
        Observation.from_dict({**rows[8].to_dict(), "query_id": "other-id", "model": WEAK})
    )
    test_rows.append(
        Observation.from_dict({**rows[12].to_dict(), "query_id": "other-id", "model": STRONG})
    )
    truth = truth_from_observations(test_rows, WEAK, STRONG)
    kept, report = guard_test_leaks(rows, truth)
    assert {o.query_id for o in kept} == {"q3"}
    assert (report.observations, report.queries) == (12, 3)
    assert (report.queries_by_id, report.queries_by_prompt) == (2, 1)
    data = tmp_path / "obs.jsonl"
    write_observations(data, rows)
    heard: list[str] = []
    config = config_for(tmp_path, [str(data)], [str(data)])
    assert len(load_data(config.train, exclude=truth, report=heard.append)) == 4
    assert heard == [report.describe()]
    assert "2 by query id, 1 more by identical prompt" in heard[0]


def test_check_inputs_accepts_existing_files(tmp_path: Path) -> None:
    data = tmp_path / "obs.jsonl"
    write_observations(data, one_split_rows())
    check_inputs(config_for(tmp_path, [str(data)], None, data={"holdout": 0.5}))
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "out").write_text("a file")
    with pytest.raises(ConfigError, match="exists and is not a directory"):
        check_inputs(config_for(tmp_path, [str(data)], None, data={"holdout": 0.5}))
