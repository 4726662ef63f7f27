"""``python -m app.local_models_server``: its arguments, xllamacpp parameters and the errors
that happen before any model loads (the served behaviour is the ``llm`` tier's)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from app.local_models_server import EXIT_USAGE, ServerOptions, build_params, parse_args


def test_parse_args_defaults() -> None:
    options = parse_args(["--model", "m.gguf", "--port", "8101", "--alias", "small"])

    assert options == ServerOptions(model=Path("m.gguf"), port=8101, alias="small")
    assert (options.host, options.n_ctx, options.threads, options.parallel) == (
        "127.0.0.1",
        4096,
        1,
        2,
    )
    assert not options.exit_with_parent


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--port", "0"], "--port must be in 1..65535, got 0"),
        (["--port", "70000"], "--port must be in 1..65535, got 70000"),
        (["--port", "1", "--parallel", "0"], "--parallel must be at least 1, got 0"),
    ],
)
def test_parse_args_refuses_bad_values(
    extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        parse_args(["--model", "m.gguf", "--alias", "a", *extra])

    assert caught.value.code == 2
    assert message in capsys.readouterr().err


def test_missing_model_file_exits_2_naming_the_setup(tmp_path: Path) -> None:
    missing = tmp_path / "absent.gguf"
    args = ["--model", str(missing), "--port", "8101", "--alias", "a"]
    result = subprocess.run(
        [sys.executable, "-m", "app.local_models_server", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == EXIT_USAGE
    assert result.stderr.strip() == (
        f"[local_models_server] model file not found: {missing}; "
        "run `make llm-setup` (deploy/local-llms/setup.sh)"
    )


def test_build_params_sets_what_the_server_needs(tmp_path: Path) -> None:
    xllamacpp = pytest.importorskip("xllamacpp", reason="the `local` extra: make llm-setup")
    options = ServerOptions(
        model=tmp_path / "m.gguf", port=8123, alias="small", n_ctx=1024, threads=3, parallel=2
    )

    params = build_params(options, xllamacpp)

    assert params.model.path == str(tmp_path / "m.gguf")
    assert params.model_alias == {"small"}
    assert (params.port, params.hostnames) == (8123, ["127.0.0.1"])
    assert (params.n_ctx, params.n_parallel) == (1024, 2)
    assert (params.cpuparams.n_threads, params.cpuparams_batch.n_threads) == (3, 3)


def test_missing_xllamacpp_exits_2_naming_the_setup(tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    args = ["--model", str(model), "--port", "8101", "--alias", "a"]
    result = subprocess.run(  # -S: no site-packages, so no xllamacpp; the repo is the cwd
        [sys.executable, "-S", "-m", "app.local_models_server", *args],
        cwd=Path(__file__).resolve().parents[3],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == EXIT_USAGE
    assert result.stderr.strip() == (
        f"[local_models_server] xllamacpp is not installed in {sys.executable}; "
        "run `make llm-setup` (deploy/local-llms/setup.sh)"
    )
