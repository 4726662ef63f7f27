"""``app.local_models``: configured upstreams vs local models, the launcher's commands, settings
and error messages. Real child processes only where a start must fail; no model is loaded."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from app import local_models, local_models_server
from app.local_models import (
    LOCAL_MODELS,
    LocalModelsError,
    RunningModel,
    settings_for,
    wants_local_models,
)
from app.settings import Settings

REPO = Path(__file__).resolve().parents[3]
COMMON_SH = REPO / "deploy" / "local-llms" / "common.sh"
EDGE_URL, CLOUD_URL = "http://edge.test/v1", "http://cloud.test/v1"


def _settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg, arg-type]


def _shell_value(name: str) -> str:
    match = re.search(rf'^{name}="?([^"\n]+)"?', COMMON_SH.read_text(encoding="utf-8"), re.M)
    assert match is not None, f"{name} not in {COMMON_SH}"
    return match.group(1)


# --- configured upstreams vs local models


def test_no_upstream_configured_means_local_models() -> None:
    assert wants_local_models(_settings()) is True


def test_configured_upstreams_start_nothing_local() -> None:
    assert wants_local_models(_settings(edge_base_url=EDGE_URL, cloud_base_url=CLOUD_URL)) is False


def test_configured_upstreams_win_even_with_local_models_off() -> None:
    settings = _settings(edge_base_url=EDGE_URL, cloud_base_url=CLOUD_URL, local_models="off")

    assert wants_local_models(settings) is False


def test_blank_urls_count_as_unset() -> None:
    settings = _settings(edge_base_url="  ", cloud_base_url="")

    assert (settings.edge_base_url, settings.cloud_base_url) == (None, None)
    assert wants_local_models(settings) is True


def test_no_default_url_points_anywhere() -> None:
    settings = _settings()

    assert (settings.edge_base_url, settings.cloud_base_url) == (None, None)
    with pytest.raises(ValueError, match="DARS_CLOUD_BASE_URL is not set"):
        settings.upstream("cloud")


@pytest.mark.parametrize(
    ("values", "present", "absent"),
    [
        ({"edge_base_url": EDGE_URL}, "DARS_EDGE_BASE_URL", "DARS_CLOUD_BASE_URL"),
        ({"cloud_base_url": CLOUD_URL}, "DARS_CLOUD_BASE_URL", "DARS_EDGE_BASE_URL"),
    ],
)
def test_half_configured_upstreams_are_refused(
    values: dict[str, str], present: str, absent: str
) -> None:
    with pytest.raises(LocalModelsError) as caught:
        wants_local_models(_settings(**values))

    assert str(caught.value) == (
        f"{present} is set but {absent} is not: set both to use your own upstreams, "
        "or neither to serve with the local models"
    )


def test_local_models_off_without_upstreams_says_what_to_set() -> None:
    with pytest.raises(LocalModelsError, match="DARS_LOCAL_MODELS=off") as caught:
        wants_local_models(_settings(local_models="off"))

    assert "DARS_EDGE_BASE_URL and DARS_CLOUD_BASE_URL" in str(caught.value)


@pytest.mark.parametrize(
    ("env", "code"),
    [
        ({}, 0),
        ({"DARS_EDGE_BASE_URL": EDGE_URL, "DARS_CLOUD_BASE_URL": CLOUD_URL}, 1),
        ({"DARS_EDGE_BASE_URL": EDGE_URL}, 2),
    ],
)
def test_module_exit_code_tells_make_whether_to_set_up(
    env: dict[str, str], code: int, tmp_path: Path
) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DARS_")}
    result = subprocess.run(
        [sys.executable, "-m", "app.local_models"],
        cwd=tmp_path,  # no stray .env
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == code, result.stderr
    assert ("DARS_CLOUD_BASE_URL is not" in result.stderr) == (code == 2)


# --- the models, their files and the commands that serve them


def test_models_match_the_setup_scripts() -> None:
    edge, cloud = LOCAL_MODELS
    assert (edge.role, cloud.role) == ("edge", "cloud")
    for model, prefix in ((edge, "EDGE"), (cloud, "CLOUD")):
        assert model.name == _shell_value(f"{prefix}_NAME")
        assert model.file_name == _shell_value(f"{prefix}_FILE").removeprefix("$MODEL_DIR/")
        assert f"{model.price_in:.2f}" in _shell_value(f"{prefix}_PRICE_IN")
        assert f"{model.price_out:.2f}" in _shell_value(f"{prefix}_PRICE_OUT")


def test_the_server_is_pinned_once_in_the_local_extra() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    (requirement,) = pyproject["project"]["optional-dependencies"]["local"]

    assert re.fullmatch(r"xllamacpp==\d+\.\d+\.\d+", requirement)
    version = requirement.removeprefix("xllamacpp==")
    for script in (REPO / "deploy" / "local-llms").glob("*.sh"):  # read there, not repeated
        assert version not in script.read_text(encoding="utf-8"), script


def test_cache_dir_follows_dars_cache(tmp_path: Path) -> None:
    assert local_models.cache_dir({"DARS_CACHE": str(tmp_path)}) == tmp_path
    assert local_models.cache_dir({}) == Path.home() / ".cache" / "dars-router"


def test_missing_model_files_name_the_setup_command(tmp_path: Path) -> None:
    (tmp_path / LOCAL_MODELS[0].file_name).write_bytes(b"")

    with pytest.raises(LocalModelsError) as caught:
        local_models.model_files(tmp_path)

    message = str(caught.value)
    assert message.startswith(
        f"local model file not found: {tmp_path / LOCAL_MODELS[1].file_name};"
    )
    assert "`make llm-setup`" in message
    assert str(tmp_path / LOCAL_MODELS[0].file_name) + "," not in message  # only the missing one


def test_server_command_round_trips_through_the_servers_parser(tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    command = local_models.server_command(model, 8123, "small-llm", threads=3, python="py")

    assert command[:3] == ["py", "-m", "app.local_models_server"]
    options = local_models_server.parse_args(command[3:])
    assert options == local_models_server.ServerOptions(
        model=model, port=8123, alias="small-llm", threads=3, exit_with_parent=True
    )


# --- settings pointed at the running models


@pytest.fixture
def running(tmp_path: Path) -> Iterator[list[RunningModel]]:
    """Two RunningModel records around a finished process (settings_for reads no process)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait(timeout=30)
    yield [
        RunningModel("edge", "e-name", tmp_path / "e.gguf", 9001, tmp_path / "e.log", process),
        RunningModel("cloud", "c-name", tmp_path / "c.gguf", 9002, tmp_path / "c.log", process),
    ]


def test_settings_for_points_both_upstreams_at_the_local_models(
    running: list[RunningModel],
) -> None:
    settings = settings_for(_settings(), running)

    assert settings.upstream("edge").base_url == "http://127.0.0.1:9001/v1"
    assert settings.upstream("cloud").base_url == "http://127.0.0.1:9002/v1"
    assert (settings.edge_model, settings.cloud_model) == ("e-name", "c-name")
    edge, cloud = LOCAL_MODELS
    assert settings.edge_price_input_per_mtok == edge.price_in
    assert settings.cloud_price_output_per_mtok == cloud.price_out


def test_settings_for_keeps_the_prices_the_user_set(running: list[RunningModel]) -> None:
    settings = settings_for(_settings(cloud_price_input_per_mtok=3.0), running)

    assert settings.cloud_price_input_per_mtok == 3.0
    assert settings.cloud_price_output_per_mtok == LOCAL_MODELS[1].price_out


def test_start_refuses_equal_model_names_before_starting(tmp_path: Path) -> None:
    # The user named the edge model like the local cloud model: both would serve one name.
    settings = _settings(edge_model=LOCAL_MODELS[1].name)

    with (
        pytest.raises(LocalModelsError, match="DARS_EDGE_MODEL and DARS_CLOUD_MODEL must differ"),
        local_models.start_local_models(settings, tmp_path, tmp_path / "logs"),
    ):
        pass
    assert not (tmp_path / "logs").exists()


def test_start_with_missing_files_starts_nothing(tmp_path: Path) -> None:
    logs = tmp_path / "logs"

    with (
        pytest.raises(LocalModelsError, match="make llm-setup"),
        local_models.start_local_models(_settings(), tmp_path, logs),
    ):
        pass
    assert not logs.exists()


def test_start_reports_a_server_that_exits_with_its_log(tmp_path: Path) -> None:
    for model in LOCAL_MODELS:  # not GGUF: llama.cpp (or a missing xllamacpp) stops the server
        (tmp_path / model.file_name).write_bytes(b"not a model")

    with (
        pytest.raises(LocalModelsError) as caught,
        local_models.start_local_models(_settings(), tmp_path, tmp_path / "logs"),
    ):
        pass

    message = str(caught.value)
    assert re.match(r"local edge model smollm2-135m-instruct exited with [12]; log ", message)
    assert "[local_models_server]" in message  # the server's own reason, from its log
    assert "make llm-setup" in message or "could not serve" in message
