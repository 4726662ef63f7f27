"""Whole collection runs against a loopback server: output format, resume, crashes, failures."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from fake_llm_server import FakeLLM, write_prompts

from router_models.collect.client import CollectError
from router_models.collect.config import CollectConfig, load_config
from router_models.collect.plan import build_queries, make_plan
from router_models.collect.runner import collect, dry_run, export
from router_models.collect.store import JsonlStore
from router_models.observations import read_observations

REPO = Path(__file__).resolve().parents[3]
N = 2  # decodes per (model, variant)
K = 2  # rewrites per query


def _config_dict(fake: FakeLLM, prompts: list[Any], out: Path, **extra: Any) -> dict[str, Any]:
    fast = {"max_attempts": 3, "backoff_s": 0.01, "timeout": 5.0}
    data: dict[str, Any] = {
        "out": str(out),
        "seed": 7,
        "prompts": prompts,
        "models": [
            {"name": "edge", "base_url": fake.base_url, "price_in": 1.0, "price_out": 2.0, **fast},
            {"name": "cloud", "base_url": fake.base_url, "price_in": 3.0, "price_out": 9.0, **fast},
        ],
        "rewrite": {"k": K, "model": "cloud", "min_similarity": 0.0},
        "sampling": {"n": N, "temperature": 0.7, "max_tokens": 64},
    }
    data.update(extra)
    return data


def _expected_rows(config: CollectConfig) -> int:
    rewrites = list(JsonlStore.read(config.rewrites_path))
    return sum(1 + len(r["accepted"]) for r in rewrites) * 2 * N


def _sample_bodies(fake: FakeLLM) -> list[dict[str, Any]]:
    return [b for b in fake.bodies if b["messages"][0]["content"].startswith("Solve")]


def test_run_writes_valid_observations_and_rerun_skips_everything(
    fake_llm: FakeLLM, gsm8k_prompts: Path, tmp_path: Path
) -> None:
    custom = write_prompts(
        tmp_path / "mine.jsonl", [{"prompt": "Write a haiku about Oslo.", "answer": "any haiku"}]
    )
    config = load_config(
        _config_dict(
            fake_llm,
            [{"path": str(gsm8k_prompts)}, {"path": str(custom), "grader": "judge"}],
            tmp_path / "obs.jsonl",
            judge={"model": "cloud"},
        )
    )
    summary = collect(config, progress=False)
    rows = read_observations(config.out)  # validates every row, unique keys, one prompt per id
    assert summary.failed == 0 and summary.written == len(rows) == _expected_rows(config)
    assert summary.rewrites_accepted == 5 * K  # the fake's rewrites all pass the checks
    gsm = [r for r in rows if r.dataset == "gsm8k"]
    assert {r.model for r in rows} == {"edge", "cloud"}
    assert Counter((r.query_id, r.model) for r in gsm) == dict.fromkeys(
        Counter((r.query_id, r.model) for r in gsm), (1 + K) * N
    )
    for r in gsm:
        assert r.variant == ("original" if r.variant_id == 0 else f"rewrite-{r.variant_id}")
        assert r.prompt.startswith("Ann has")  # always the original text
        if r.variant_id:
            assert r.meta["variant_text"] != r.prompt and r.prompt in r.meta["variant_text"]
        assert r.score == float(r.meta["seed"] % 3 == 2)  # graded against meta.answer "2"
        assert r.meta["grader"] == {"name": "numeric", "extracted": str(r.meta["seed"] % 3)}
        assert r.meta["usage"]["completion_tokens"] == 7
        price = (1.0, 2.0) if r.model == "edge" else (3.0, 9.0)
        usage = r.meta["usage"]
        assert r.cost == pytest.approx(
            (usage["prompt_tokens"] * price[0] + usage["completion_tokens"] * price[1]) / 1e6
        )
        assert "solution" not in r.meta and r.meta["answer"] == "2"
    seeds = [r.meta["seed"] for r in rows]
    assert len(set(seeds)) == len(seeds)  # every decode its own seed
    judged = [r for r in rows if r.dataset == "custom"]
    assert judged and all(r.score == pytest.approx(6 / 9) for r in judged)
    assert all(r.meta["judge"]["usage"]["completion_tokens"] > 0 for r in judged)

    calls = len(fake_llm.bodies)
    again = collect(config, progress=False)
    assert (again.written, again.already_done, again.failed) == (0, len(rows), 0)
    assert len(fake_llm.bodies) == calls  # nothing re-requested, rewrites included


def test_dry_run_counts_pending_work(
    fake_llm: FakeLLM, gsm8k_prompts: Path, tmp_path: Path
) -> None:
    config = load_config(_config_dict(fake_llm, [str(gsm8k_prompts)], tmp_path / "obs.jsonl"))
    plan = make_plan(config, build_queries(config), [], [])
    assert plan.observations_pending == 4 * (1 + K) * 2 * N
    assert plan.rewrite_queries_pending == 4
    assert plan.endpoints["cloud"].calls == 4 * K + 4 * (1 + K) * N
    assert plan.cost_expected <= plan.cost_max and plan.cost_max > 0
    text = dry_run(config)
    assert "to collect: 48" in text and "estimated cost" in text
    assert fake_llm.bodies == []  # a dry run spends nothing
    collect(config, progress=False)
    assert "to collect: 0" in dry_run(config)


def test_failed_calls_are_counted_and_retried_on_the_next_run(
    fake_llm: FakeLLM, gsm8k_prompts: Path, tmp_path: Path
) -> None:
    config = load_config(
        _config_dict(
            fake_llm,
            [{"path": str(gsm8k_prompts), "limit": 1}],
            tmp_path / "obs.jsonl",
            rewrite={"k": 0},
        )
    )
    config = dataclasses.replace(
        config, models=tuple(dataclasses.replace(m, max_concurrency=1) for m in config.models)
    )
    edge_requests = Counter[str]()

    def first_edge_call_fails(body: dict[str, Any]) -> str | None:
        if body["model"] != "edge":
            return None
        edge_requests["n"] += 1
        return "500" if edge_requests["n"] <= 3 else None  # all 3 attempts of one call

    fake_llm.fault_for = first_edge_call_fails
    first = collect(config, progress=False, parallel_queries=1)
    assert (first.failed, first.written) == (1, 2 * N - 1)
    second = collect(config, progress=False)
    assert (second.failed, second.written) == (0, 1)
    assert len(read_observations(config.out)) == 2 * N


def test_too_many_failures_stop_the_run(
    fake_llm: FakeLLM, gsm8k_prompts: Path, tmp_path: Path
) -> None:
    config = load_config(
        _config_dict(
            fake_llm,
            [str(gsm8k_prompts)],
            tmp_path / "obs.jsonl",
            rewrite={"k": 0},
            max_failures=2,
        )
    )
    fake_llm.faults = ["400"] * 100
    with pytest.raises(CollectError, match="more than 2 failed calls"):
        collect(config, progress=False, parallel_queries=1)


def test_time_budget_stops_starting_queries(
    fake_llm: FakeLLM, gsm8k_prompts: Path, tmp_path: Path
) -> None:
    config = load_config(
        _config_dict(fake_llm, [str(gsm8k_prompts)], tmp_path / "obs.jsonl", rewrite={"k": 0})
    )
    summary = collect(config, progress=False, time_budget_s=0.0)
    assert (summary.written, summary.queries_left) == (0, 4)


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines(keepends=True) if path.exists() else []


def test_resume_after_killed_process_loses_and_duplicates_nothing(
    fake_llm: FakeLLM, gsm8k_prompts: Path, tmp_path: Path
) -> None:
    fake_llm.delay_s = 0.05
    out = tmp_path / "obs.jsonl"
    data = _config_dict(fake_llm, [str(gsm8k_prompts)], out)
    config_path = tmp_path / "collect.yaml"
    config_path.write_text(yaml.safe_dump(data), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "router_models.collect",
            "--config",
            str(config_path),
            "--no-progress",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while len(_lines(out)) < 10:
            if process.poll() is not None or time.monotonic() > deadline:
                stderr = process.stderr.read().decode() if process.stderr else ""
                pytest.fail(f"collector ended or stalled before the kill: {stderr[-2000:]}")
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=30)
        if process.stderr:
            process.stderr.close()
    before = _lines(out)
    complete = [line for line in before if line.endswith("\n")]
    assert 10 <= len(complete) < 4 * (1 + K) * 2 * N  # killed mid-run
    # A write cut short by the crash: half a record at the end of the file.
    with out.open("a", encoding="utf-8") as handle:
        handle.write(complete[-1][: len(complete[-1]) // 2])

    config = load_config(data)
    summary = collect(config, progress=False)
    after = _lines(out)
    assert after[: len(complete)] == complete  # nothing that was written is lost or changed
    rows = read_observations(out)  # raises on duplicate keys
    assert len(rows) == len(after) == _expected_rows(config)
    assert summary.repaired_bytes > 0 and summary.already_done == len(complete)
    assert summary.written == len(rows) - len(complete)
    rewrites = [json.loads(line) for line in _lines(config.rewrites_path)]
    assert len({(r["dataset"], r["query_id"]) for r in rewrites}) == len(rewrites) == 4


def test_export_is_sorted_and_reproducible(
    fake_llm: FakeLLM, gsm8k_prompts: Path, tmp_path: Path
) -> None:
    config = load_config(_config_dict(fake_llm, [str(gsm8k_prompts)], tmp_path / "obs.jsonl"))
    collect(config, progress=False, parallel_queries=4)
    first, second = tmp_path / "a.jsonl.gz", tmp_path / "b.jsonl.gz"
    assert export(config.out, first) == export(config.out, second) == _expected_rows(config)
    assert first.read_bytes() == second.read_bytes()
    keys = [(r.query_id, r.model, r.variant_id, r.sample_id) for r in read_observations(first)]
    assert keys == sorted(keys)


def test_plan_uses_stored_rewrites_and_observed_lengths(
    fake_llm: FakeLLM, gsm8k_prompts: Path, tmp_path: Path
) -> None:
    config = load_config(_config_dict(fake_llm, [str(gsm8k_prompts)], tmp_path / "obs.jsonl"))
    queries = build_queries(config)
    first = queries[0].prompt
    rewrites = [{"dataset": first.dataset, "query_id": first.query_id, "accepted": ["one"]}]
    done = {
        "dataset": first.dataset,
        "query_id": first.query_id,
        "model": "edge",
        "variant_id": 0,
        "sample_id": 0,
        "meta": {"usage": {"completion_tokens": 10}},
    }
    plan = make_plan(config, queries, [done], rewrites)
    # The first query has 2 known variants (one decode done), the other three assume 1 + K.
    assert plan.observations_pending == (2 * 2 * N - 1) + 3 * (1 + K) * 2 * N
    assert plan.rewrite_queries_pending == 3
    edge = plan.endpoints["edge"]
    assert edge.completion_tokens_expected == pytest.approx(10.0 * edge.calls)
