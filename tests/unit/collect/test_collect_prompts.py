"""Prompt sets: the shared prompts-* format, a user's short rows, filters, interleaving."""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_llm_server import gsm8k_prompt, write_prompts

from router_models.collect.config import load_config
from router_models.collect.plan import build_queries
from router_models.collect.prompts import build_messages, load_prompts
from router_models.observations import ObservationError


def test_shared_format_and_filters(tmp_path: Path) -> None:
    rows = [gsm8k_prompt(i, 2) for i in range(5)]
    rows[0]["split"] = "train"
    path = write_prompts(tmp_path / "p.jsonl.gz", rows)
    test = load_prompts(path, splits=["test"])
    assert [p.query_id for p in test] == [f"gsm8k-test-{i:05d}" for i in range(1, 5)]
    assert test[0].model is None and test[0].meta["answer"] == "2"
    assert len(load_prompts(path, limit=2)) == 2
    shuffled = load_prompts(path, shuffle_seed=0)
    assert sorted(p.query_id for p in shuffled) == sorted(r["query_id"] for r in rows)
    assert load_prompts(path, shuffle_seed=0, limit=3) == shuffled[:3]  # a prefix: extendable


def test_short_rows_get_defaults_and_meta(tmp_path: Path) -> None:
    path = write_prompts(
        tmp_path / "mine.jsonl",
        [{"prompt": "Capital of France?", "answers": ["Paris"], "grader": "short"}],
    )
    (prompt,) = load_prompts(path)
    assert (prompt.dataset, prompt.split) == ("custom", "test")
    assert prompt.query_id.startswith("custom-") and len(prompt.query_id) == len("custom-") + 12
    assert prompt.meta == {"answers": ["Paris"], "grader": "short"}


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"query": "no prompt"}], "needs a string field 'prompt'"),
        ([{"prompt": "a", "query_id": "x"}, {"prompt": "b", "query_id": "x"}], "duplicate"),
        ([{"prompt": "a", "split": "dev"}], "split"),
    ],
)
def test_bad_rows_name_file_and_line(
    tmp_path: Path, rows: list[dict[str, str]], message: str
) -> None:
    path = write_prompts(tmp_path / "bad.jsonl", rows)
    with pytest.raises(ObservationError, match=message) as info:
        load_prompts(path)
    assert str(path) in str(info.value)


def test_sources_are_interleaved_by_share(tmp_path: Path) -> None:
    small = write_prompts(
        tmp_path / "a.jsonl", [{"prompt": f"a{i}", "dataset": "a"} for i in range(2)]
    )
    large = write_prompts(
        tmp_path / "b.jsonl", [{"prompt": f"b{i}", "dataset": "b"} for i in range(6)]
    )
    config = load_config(
        {
            "prompts": [str(small), str(large)],
            "models": [{"name": "m", "base_url": "http://127.0.0.1:9/v1"}],
            "rewrite": {"k": 0},
        }
    )
    order = [q.prompt.prompt for q in build_queries(config)]
    assert order == ["b0", "a0", "b1", "b2", "b3", "a1", "b4", "b5"]
    assert all(q.grader == "judge" for q in build_queries(config))


def test_build_messages() -> None:
    assert build_messages("q", "") == [{"role": "user", "content": "q"}]
    assert build_messages("q", "be brief")[0] == {"role": "system", "content": "be brief"}
