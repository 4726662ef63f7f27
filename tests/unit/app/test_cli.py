"""``dars-router`` commands: ``route`` prints a decision; ``serve`` without a router explains
how to get one and exits 2, without a traceback (run as a real process, with a clean env)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from helpers.onnx_routers import linear_scores, make_linear_router, random_unit_vectors

from app import cli, embedding
from app.settings import get_settings

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DARS_")}
    return {**env, **extra}


def _run(code: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env=_clean_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_serve_without_any_router_model_exits_2_with_how_to(tmp_path: Path) -> None:
    # Pretend this install ships no bundled router, whatever router_models/pretrained holds.
    code = (
        "import sys, app.main, app.cli\n"
        "app.main.bundled_router_path = lambda: None\n"
        "sys.exit(app.cli.main(['serve']))\n"
    )
    result = _run(code, tmp_path)

    assert result.returncode == 2
    assert "dars-train" in result.stderr
    assert "DARS_ROUTER_MODEL" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_serve_with_a_missing_router_file_exits_2(tmp_path: Path) -> None:
    missing = tmp_path / "missing.onnx"
    result = _run(
        "import sys, app.cli; sys.exit(app.cli.main(['serve']))",
        tmp_path,
        DARS_ROUTER_MODEL=str(missing),
    )

    assert result.returncode == 2
    assert f"Router model file not found: {missing}" in result.stderr
    assert "Traceback" not in result.stderr


SERVE = "import sys, app.cli; sys.exit(app.cli.main(['serve']))"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"DARS_CLOUD_BASE_URL": "http://127.0.0.1:9/v1"},
            "DARS_CLOUD_BASE_URL is set but DARS_EDGE_BASE_URL is not",
        ),
        ({"DARS_LOCAL_MODELS": "off"}, "no upstream configured and DARS_LOCAL_MODELS=off"),
    ],
)
def test_serve_refuses_half_or_no_upstreams_without_local_models(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    result = _run(SERVE, tmp_path, DARS_CACHE=str(tmp_path), **env)

    assert result.returncode == 2
    assert result.stderr.startswith(f"dars-router: {message}")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()  # nothing was started


def test_serve_without_upstreams_or_local_model_files_names_the_setup(tmp_path: Path) -> None:
    result = _run(SERVE, tmp_path, DARS_CACHE=str(tmp_path))

    assert result.returncode == 2
    assert result.stderr.startswith("dars-router: local model file not found: ")
    assert str(tmp_path / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf") in result.stderr
    assert "`make llm-setup`" in result.stderr
    assert "Traceback" not in result.stderr


def test_invalid_settings_exit_2(tmp_path: Path) -> None:
    result = _run(
        "import sys, app.cli; sys.exit(app.cli.main(['serve']))", tmp_path, DARS_PORT="eighty"
    )

    assert result.returncode == 2
    assert "invalid settings" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture
def router_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, encoder: SentenceTransformer
) -> Iterator[None]:
    """Settings from a clean env with a tiny router; the session's encoder instead of a reload."""
    for name in [k for k in os.environ if k.startswith("DARS_")]:
        monkeypatch.delenv(name)
    router = make_linear_router(tmp_path / "router.onnx", bias=0.0, default_threshold=0.7)
    monkeypatch.setenv("DARS_ROUTER_MODEL", str(router))
    monkeypatch.setenv("DARS_ONNX_PROVIDERS", "cpu")
    monkeypatch.setenv("DARS_EDGE_MODEL", "small-llm")
    monkeypatch.setenv("DARS_CLOUD_MODEL", "big-llm")
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setattr(embedding, "load_encoder", lambda path, device: encoder)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.mark.usefixtures("router_env")
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], "route=edge reason=threshold score=0.500000 threshold=0.700000 model=small-llm"),
        (
            ["--threshold", "0.25"],
            "route=cloud reason=threshold score=0.500000 threshold=0.250000 model=big-llm",
        ),
    ],
)
def test_route_prints_score_and_decision(
    capsys: pytest.CaptureFixture[str], args: list[str], expected: str
) -> None:
    assert cli.main(["route", "How do I sort a list in Python?", *args]) == 0

    assert capsys.readouterr().out.strip() == expected


@pytest.mark.usefixtures("router_env")
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["   "], "The last user message has no text content to route on."),
        (["a query", "--threshold", "1.5"], "threshold must be a number in [0, 1], got 1.5"),
    ],
)
def test_route_rejects_bad_input_with_exit_2(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert cli.main(["route", *args]) == 2

    assert capsys.readouterr().err.strip() == f"dars-router: {message}"


def test_route_score_is_the_routers_score_of_the_real_embedding(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    encoder: SentenceTransformer,
    router_env: None,
) -> None:
    weights = 4.0 * random_unit_vectors(1, seed=3)[0]
    router = make_linear_router(tmp_path / "weighted.onnx", weights=weights, bias=0.1)
    monkeypatch.setenv("DARS_ROUTER_MODEL", str(router))
    get_settings.cache_clear()
    text = "Prove that there are infinitely many primes."

    assert cli.main(["route", text]) == 0

    printed = re.search(r"score=(\S+)", capsys.readouterr().out)
    assert printed is not None
    vector = encoder.encode([text], normalize_embeddings=True)
    expected = linear_scores(vector, weights, 0.1)[0]
    assert float(printed.group(1)) == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize(
    ("argv", "env"), [(["serve", "--workers", "2"], {}), (["serve"], {"DARS_WORKERS": "3"})]
)
def test_serve_with_several_workers_needs_redis(
    tmp_path: Path, argv: list[str], env: dict[str, str]
) -> None:
    result = _run(f"import sys, app.cli; sys.exit(app.cli.main({argv!r}))", tmp_path, **env)

    assert result.returncode == 2
    assert "DARS_REDIS_URL" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("count", ["0", "257"])
def test_serve_refuses_a_worker_count_out_of_bounds(tmp_path: Path, count: str) -> None:
    result = _run(f"import app.cli; app.cli.main(['serve', '--workers', '{count}'])", tmp_path)

    assert result.returncode == 2
    assert "--workers: must be within [1, 256]" in result.stderr
