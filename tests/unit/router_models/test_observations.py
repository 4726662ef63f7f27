"""The observation format: loading, filters, validation errors with line numbers, writing."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from router_models.observations import (
    FIELDS,
    Observation,
    ObservationError,
    format_observation,
    group_by_query,
    iter_observations,
    read_observations,
    write_observations,
)


def row(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "dataset": "gsm8k",
        "split": "test",
        "query_id": "q1",
        "prompt": "What is 2+2?",
        "variant_id": 0,
        "variant": None,
        "sample_id": 0,
        "model": "small",
        "score": 1.0,
        "response": "4",
        "cost": None,
        "meta": {},
    }
    base.update(overrides)
    return base


def write_lines(path: Path, rows: list[Any]) -> Path:
    text = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


@pytest.mark.parametrize("name", ["obs.jsonl", "obs.jsonl.gz"])
def test_reads_plain_and_gzip(tmp_path: Path, name: str) -> None:
    path = write_lines(tmp_path / name, [row(), row(model="big", score=0.0)])
    rows = read_observations(path)
    assert [o.model for o in rows] == ["small", "big"]
    assert rows[0] == Observation(
        dataset="gsm8k", split="test", query_id="q1", prompt="What is 2+2?", model="small",
        score=1.0, response="4",
    )  # fmt: skip


def test_minimal_user_row_gets_defaults(tmp_path: Path) -> None:
    minimal = {k: row()[k] for k in ("dataset", "split", "query_id", "prompt", "model", "score")}
    (obs,) = read_observations(write_lines(tmp_path / "mine.jsonl", [minimal]))
    assert (obs.variant_id, obs.sample_id, obs.variant, obs.response, obs.meta) == (
        0,
        0,
        None,
        None,
        {},
    )


def test_filters(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "obs.jsonl",
        [
            row(),
            row(model="big"),
            row(query_id="q2", prompt="p2", split="train"),
            row(query_id="q3", prompt="p3", dataset="mmlu", meta={"contaminated": True}),
            row(query_id="q4", prompt="p4", model=None, score=None),
        ],
    )
    assert len(read_observations(path, models=["big"])) == 1
    assert {o.query_id for o in read_observations(path, splits="train")} == {"q2"}
    assert {o.query_id for o in read_observations(path, datasets=["mmlu"])} == {"q3"}
    assert {o.query_id for o in read_observations(path, query_ids={"q1", "q3"})} == {"q1", "q3"}
    assert "q3" not in {o.query_id for o in read_observations(path, exclude_flags=["contaminated"])}
    assert "q4" not in {o.query_id for o in read_observations(path, scored_only=True)}


def test_directory_reads_every_observation_file(tmp_path: Path) -> None:
    write_lines(tmp_path / "a.jsonl", [row()])
    write_lines(tmp_path / "b.jsonl.gz", [row(query_id="q2", prompt="p2")])
    (tmp_path / "notes.txt").write_text("ignored")
    assert len(read_observations(tmp_path)) == 2


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("{not json", "invalid JSON"),
        (json.dumps([1, 2]), "must be a JSON object"),
        (json.dumps(row(score=1.5)), "within \\[0, 1\\]"),
        (json.dumps(row(score="1")), "'score' must be a number"),
        (json.dumps(row(split="dev")), "'split' must be one of"),
        (json.dumps({k: v for k, v in row().items() if k != "prompt"}), "missing required"),
        (json.dumps(row(extra=1)), "unknown field"),
        (json.dumps(row(model=None)), "both null or both set"),
        (json.dumps(row(sample_id=-1)), "non-negative integer"),
        (json.dumps(row(variant_id=True)), "non-negative integer"),
        (json.dumps(row(cost=-0.1)), "'cost' must be >= 0"),
        (json.dumps(row(meta=[1])), "'meta' must be a JSON object"),
        (json.dumps(row(query_id="")), "must not be empty"),
    ],
)
def test_malformed_rows_name_file_and_line(tmp_path: Path, bad: str, message: str) -> None:
    path = write_lines(tmp_path / "bad.jsonl", [row(), "", bad])
    with pytest.raises(ObservationError, match=message) as info:
        read_observations(path)
    assert info.value.line == 3
    assert str(info.value).startswith(f"{path}:3: ")


def test_cross_row_rules(tmp_path: Path) -> None:
    dup = write_lines(tmp_path / "dup.jsonl", [row(), row(score=0.0)])
    with pytest.raises(ObservationError, match="duplicate key"):
        read_observations(dup)
    assert len(read_observations(dup, check_unique=False)) == 2
    two_prompts = write_lines(tmp_path / "p.jsonl", [row(), row(model="big", prompt="other")])
    with pytest.raises(ObservationError, match="two different prompts"):
        read_observations(two_prompts)


def test_missing_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ObservationError, match="no such file"):
        list(iter_observations(tmp_path / "nope.jsonl"))


@pytest.mark.parametrize("name", ["out.jsonl", "out.jsonl.gz"])
def test_write_round_trip_and_append(tmp_path: Path, name: str) -> None:
    rows = [Observation.from_dict(row(prompt="Ünïcode’s 2+2?", meta={"answer": "4"}))]
    path = tmp_path / name
    assert write_observations(path, rows) == 1
    assert write_observations(path, [row(model="big", prompt="Ünïcode’s 2+2?")], append=True) == 1
    back = read_observations(path)
    assert back[0] == rows[0]
    assert [o.model for o in back] == ["small", "big"]


def test_gzip_output_is_reproducible(tmp_path: Path) -> None:
    rows = [row(), row(model="big")]
    write_observations(tmp_path / "a.jsonl.gz", rows)
    write_observations(tmp_path / "b.jsonl.gz", rows)
    assert (tmp_path / "a.jsonl.gz").read_bytes() == (tmp_path / "b.jsonl.gz").read_bytes()


def test_format_observation_is_one_ordered_line() -> None:
    line = format_observation(row(prompt="Café?"))
    assert line.endswith("\n") and line.count("\n") == 1
    assert list(json.loads(line)) == list(FIELDS)
    assert "Café" in line  # not ASCII-escaped, like the shared data
    with pytest.raises(ObservationError, match="within"):
        format_observation(row(score=2))


def test_write_refuses_other_suffixes(tmp_path: Path) -> None:
    with pytest.raises(ObservationError, match=r"\.jsonl"):
        write_observations(tmp_path / "out.json", [row()])


def test_group_by_query_skips_prompt_only_rows() -> None:
    rows = [Observation.from_dict(r) for r in (row(), row(model="big"), row(sample_id=1))]
    rows.append(Observation.from_dict(row(query_id="q9", prompt="p9", model=None, score=None)))
    grouped = group_by_query(rows)
    assert list(grouped) == ["q1"]
    assert [len(grouped["q1"][m]) for m in ("small", "big")] == [2, 1]
