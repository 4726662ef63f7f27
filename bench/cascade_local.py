"""Confidence cascade vs trained router with real local models: accuracy per cloud call.

Starts SmolLM2-135M (edge) and Qwen2.5-Coder-0.5B (cloud stand-in) with
``python -m app.local_models_server`` (files from ``make llm-setup`` in
``~/.cache/dars-router/models``), the router service in-process on loopback (bundled router),
and sends real GSM8K and NQ-open prompts (``../shared/data/prompts-*.jsonl.gz``, seeded sample)
through the OpenAI SDK twice: ``router-cascade-<t>`` and ``router``. Grades with the
collector's graders (GSM8K numeric; NQ alias contained in the answer) and prints a Markdown
table: accuracy, cloud calls, edge calls, and accuracy per cloud call. Run from the repository
root (2 cores: a few minutes for the defaults)::

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python bench/cascade_local.py \\
        --data ../shared/data --per-dataset 8 --out bench/results/cascade-local.md
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the loopback uvicorn helper of the test suite

from integration.upstream_server import ServerThread  # noqa: E402

from app.main import create_app  # noqa: E402
from app.settings import Settings  # noqa: E402
from router_models.collect.grading import grade_numeric, grade_short  # noqa: E402

MODELS = Path.home() / ".cache" / "dars-router" / "models"
EDGE_FILE, CLOUD_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf", "Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf"
SYSTEM = {
    "gsm8k": "Solve the problem step by step, briefly. End with 'The answer is N.'",
    "nq-open": "Answer the question with a short phrase only.",
}
MAX_TOKENS = {"gsm8k": 192, "nq-open": 24}


@dataclass
class Result:
    mode: str
    dataset: str
    correct: float
    route: str
    edge_calls: int
    seconds: float


def prompts(data: Path, per_dataset: int, seed: int) -> list[dict[str, Any]]:
    """``per_dataset`` seeded prompts of GSM8K (test split) and NQ-open."""
    chosen: list[dict[str, Any]] = []
    for name, split in (("gsm8k", "test"), ("nq-open", "test")):
        with gzip.open(data / f"prompts-{name}.jsonl.gz", "rt", encoding="utf-8") as handle:
            rows = [row for line in handle if (row := json.loads(line))["split"] == split]
        chosen += random.Random(seed).sample(rows, per_dataset)
    return chosen


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@contextmanager
def model_server(file: str, alias: str, port: int, parallel: int) -> Iterator[str]:
    command = [
        sys.executable, "-m", "app.local_models_server", "--model", str(MODELS / file),
        "--alias", alias, "--port", str(port), "--threads", "2", "--parallel", str(parallel),
    ]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 180
        while not _ready(f"http://127.0.0.1:{port}/health"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{alias} did not start")
            time.sleep(0.3)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.terminate()
        process.wait(timeout=30)


def grade(row: dict[str, Any], text: str) -> float:
    if row["dataset"] == "gsm8k":
        return grade_numeric(text, row["meta"]["answer"]).score
    return grade_short(text, row["meta"]["answers"]).score


def ask(client: openai.OpenAI, model: str, row: dict[str, Any]) -> Result:
    messages: Any = [
        {"role": "system", "content": SYSTEM[row["dataset"]]},
        {"role": "user", "content": row["prompt"]},
    ]
    started = time.perf_counter()
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=messages, max_tokens=MAX_TOKENS[row["dataset"]], temperature=0.7
    )
    text = raw.parse().choices[0].message.content or ""
    route = raw.headers["x-dars-route"]
    edge_calls = int(raw.headers.get("x-dars-k", "0")) or int(route == "edge")
    return Result(
        model, row["dataset"], grade(row, text), route, edge_calls, time.perf_counter() - started
    )


def table(results: list[Result]) -> str:
    lines = [
        "| mode | dataset | n | accuracy | cloud calls | edge calls | accuracy per cloud call "
        "| s / query |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    keys = sorted({(r.mode, r.dataset) for r in results}) + sorted(
        {(r.mode, "all") for r in results}
    )
    for mode, dataset in keys:
        rows = [r for r in results if r.mode == mode and dataset in (r.dataset, "all")]
        correct = sum(r.correct for r in rows)
        cloud = sum(r.route == "cloud" for r in rows)
        per_cloud = f"{correct / cloud:.2f}" if cloud else "–"
        lines.append(
            f"| {mode} | {dataset} | {len(rows)} | {correct / len(rows):.2f} | {cloud} "
            f"| {sum(r.edge_calls for r in rows)} | {per_cloud} "
            f"| {sum(r.seconds for r in rows) / len(rows):.1f} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--per-dataset", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--threshold", default="0.6", help="cascade entropy threshold")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    rows = prompts(args.data, args.per_dataset, args.seed)
    results: list[Result] = []
    with (
        model_server(EDGE_FILE, "smollm2-135m-instruct", 8301, args.k) as edge_url,
        model_server(CLOUD_FILE, "qwen2.5-coder-0.5b-instruct", 8302, 1) as cloud_url,
    ):
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            edge_base_url=edge_url, edge_model="smollm2-135m-instruct",
            cloud_base_url=cloud_url, cloud_model="qwen2.5-coder-0.5b-instruct",
            cascade_k=args.k, onnx_threads=1, torch_threads=1, upstream_read_timeout_s=300,
        )  # fmt: skip
        server = ServerThread(create_app(settings), lifespan="on").start()
        try:
            with openai.OpenAI(base_url=f"{server.url}/v1", api_key="-", timeout=600) as client:
                for row in rows:
                    for model in (f"router-cascade-{args.threshold}", "router"):
                        results.append(ask(client, model, row))
                        print(results[-1], file=sys.stderr, flush=True)
        finally:
            server.stop()
    report = (
        f"{len(rows)} prompts (seed {args.seed}), k={args.k}, SmolLM2-135M edge, "
        f"Qwen2.5-Coder-0.5B cloud, bundled router at its default threshold\n\n{table(results)}\n"
    )
    print(report)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
