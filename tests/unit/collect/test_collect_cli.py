"""``dars-train collect`` options: endpoint specs, YAML plus flags, dry run, usage errors."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml
from fake_llm_server import FakeLLM

from router_models.collect.cli import parse_endpoint, register
from router_models.collect.config import ConfigError, load_config
from router_models.observations import read_observations


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="dars-train")
    register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["collect", *argv])


def test_parse_endpoint() -> None:
    spec = parse_endpoint(
        "gpt=https://api.example/v1,api_key_env=KEY,price_in=0.15,max_concurrency=8"
    )
    assert spec == {
        "name": "gpt",
        "base_url": "https://api.example/v1",
        "api_key_env": "KEY",
        "price_in": 0.15,
        "max_concurrency": 8,
    }
    for bad in ("no-url", "x=http://h/v1,flag"):
        with pytest.raises(ConfigError):
            parse_endpoint(bad)


def test_dry_run_from_yaml_with_flag_overrides(
    fake_llm: FakeLLM, gsm8k_prompts: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "collect.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "prompts": [{"path": str(gsm8k_prompts), "limit": 2}],
                "models": [{"name": "edge", "base_url": fake_llm.base_url}],
                "rewrite": {"k": 0},
                "out": str(tmp_path / "obs.jsonl"),
            }
        )
    )
    args = _parse(
        ["--config", str(config), "-n", "5", "--model", f"cloud={fake_llm.base_url}", "--dry-run"]
    )
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "to collect: 20" in out  # 2 queries x 1 variant x 2 models x 5 decodes
    assert fake_llm.bodies == []


def test_collect_and_export_through_the_cli(
    fake_llm: FakeLLM, gsm8k_prompts: Path, tmp_path: Path
) -> None:
    exported = tmp_path / "out.jsonl.gz"
    args = _parse(
        [
            "--prompts", str(gsm8k_prompts), "--limit", "1",
            "--model", f"edge={fake_llm.base_url},max_attempts=2,backoff_s=0.01",
            "--rewriter", "edge", "-k", "1", "--min-similarity", "0",
            "-n", "2", "--out", str(tmp_path / "obs.jsonl"),
            "--export", str(exported), "--no-progress",
        ]
    )  # fmt: skip
    assert args.func(args) == 0
    rows = read_observations(exported)
    assert len(rows) == 1 * 2 * 2 and {r.variant_id for r in rows} == {0, 1}


def test_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = _parse(["--prompts", str(tmp_path / "missing.jsonl")])
    assert args.func(args) == 2
    assert "no model to sample" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="unknown key"):
        load_config({"prompts": ["p"], "models": [{"name": "m", "base_url": "u", "colour": 1}]})
    with pytest.raises(ConfigError, match=r"needs rewrite\.model"):
        load_config({"prompts": ["p"], "models": [{"name": "m", "base_url": "u"}]})


def test_time_budget_flag_reaches_the_run(
    fake_llm: FakeLLM, gsm8k_prompts: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _parse(
        [
            "--prompts", str(gsm8k_prompts), "--model", f"edge={fake_llm.base_url}",
            "-k", "0", "--out", str(tmp_path / "obs.jsonl"), "--time-budget", "0",
            "--no-progress",
        ]
    )  # fmt: skip
    assert args.func(args) == 0
    assert "time budget used up, 4 queries left" in capsys.readouterr().err
    assert fake_llm.bodies == []
