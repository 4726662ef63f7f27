"""What the real-local-model benchmarks share (``cascade_local.py``, ``live_demo.py``).

Local model servers (``python -m app.local_models_server`` on free loopback ports, files from
``make llm-setup``), the router service in-process on loopback in front of them, the seeded
GSM8K / NQ-open prompt sample with its gold grading, and the machine lines of the reports.
"""

from __future__ import annotations

import gzip
import json
import os
import platform
import random
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import openai

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "tests") not in sys.path:
    sys.path.insert(0, str(REPO / "tests"))  # the loopback uvicorn helper of the test suite

from integration.upstream_server import ServerThread  # noqa: E402

from app.main import bundled_router_path, create_app  # noqa: E402
from app.settings import Settings  # noqa: E402
from bench._harness import free_port, stop  # noqa: E402
from router_models.collect.grading import grade_numeric, grade_short  # noqa: E402

MODELS = Path(os.environ.get("DARS_CACHE", Path.home() / ".cache" / "dars-router")) / "models"
EDGE_FILE, EDGE_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2-135m-instruct"
CLOUD_FILE, CLOUD_NAME = "Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf", "qwen2.5-coder-0.5b-instruct"
DATASETS = (("gsm8k", "test"), ("nq-open", "test"))
TIMEOUT_S = 900.0  # generous: other jobs share the cores
DEFAULT_DATA = REPO.parent / "shared" / "data"


def prompts(data: Path, per_dataset: int, seed: int) -> list[dict[str, Any]]:
    """``per_dataset`` seeded prompts of each dataset, interleaved."""
    chosen: list[list[dict[str, Any]]] = []
    for name, split in DATASETS:
        with gzip.open(data / f"prompts-{name}.jsonl.gz", "rt", encoding="utf-8") as handle:
            rows = [row for line in handle if (row := json.loads(line))["split"] == split]
        chosen.append(random.Random(seed).sample(rows, per_dataset))
    return [row for pair in zip(*chosen, strict=True) for row in pair]


def gold_grade(row: dict[str, Any], text: str) -> float:
    """``text`` graded against the row's gold (GSM8K: the last number; NQ-open: an alias)."""
    if row["dataset"] == "gsm8k":
        return grade_numeric(text, row["meta"]["answer"]).score
    return grade_short(text, row["meta"]["answers"]).score


def bundled_router() -> Path:
    """The bundled router file, or exit with a message."""
    router = bundled_router_path()
    if router is None:
        raise SystemExit("no bundled router (router_models/pretrained/default.onnx)")
    return router


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@contextmanager
def model_server(file: str, alias: str, log: Path, parallel: int | None = None) -> Iterator[str]:
    """One ``app.local_models_server`` on a free loopback port; yields its ``.../v1`` URL."""
    port = free_port()
    command = [
        sys.executable, "-m", "app.local_models_server", "--model", str(MODELS / file),
        "--alias", alias, "--port", str(port), "--threads", "1", "--exit-with-parent",
    ]  # fmt: skip
    if parallel is not None:
        command += ["--parallel", str(parallel)]
    with log.open("wb") as sink:
        process = subprocess.Popen(command, cwd=REPO, stdout=sink, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while not _ready(f"http://127.0.0.1:{port}/health"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{alias} did not start; see {log}")
            time.sleep(0.3)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        stop(process)


@contextmanager
def router_service(
    router: Path, edge_url: str, cloud_url: str, **settings: Any
) -> Iterator[tuple[str, openai.OpenAI]]:
    """The router service in-process on loopback, one thread per encoder, in front of the two
    local servers; yields its URL and an OpenAI client on it. ``settings``: more fields."""
    config = Settings(
        _env_file=None,  # type: ignore[call-arg]
        router_model=router,
        edge_base_url=edge_url, edge_model=EDGE_NAME,
        cloud_base_url=cloud_url, cloud_model=CLOUD_NAME,
        onnx_threads=1, torch_threads=1, embedding_threads=1,
        upstream_read_timeout_s=TIMEOUT_S, upstream_backoff_s=0.0,
        **settings,
    )  # fmt: skip
    server = ServerThread(create_app(config), lifespan="on").start()
    try:
        with openai.OpenAI(
            base_url=f"{server.url}/v1", api_key="-", timeout=TIMEOUT_S, max_retries=0
        ) as client:
            yield server.url, client
    finally:
        server.stop()


def load_average() -> str:
    """The 1, 5 and 15 minute load averages."""
    return ", ".join(Path("/proc/loadavg").read_text(encoding="utf-8").split()[:3])


def cpu() -> str:
    """The CPU model and core count."""
    for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
        if line.startswith("model name"):
            return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def cpu_line(load_before: str, load_after: str, note: str = "") -> str:
    """The report's CPU line: model, and the load average before and after the run."""
    return (
        f"- CPU: {cpu()}; shared with other jobs. Load average (1, 5, 15 min) before "
        f"{load_before}, after {load_after}{note}."
    )


def write_report(report: str, out: Path | None) -> None:
    """Print the report, and write it to ``out`` when given."""
    print(report)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(report, encoding="utf-8")
