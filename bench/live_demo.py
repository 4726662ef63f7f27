"""The live loop with real local models: a stream of real prompts, shadow grades, retrain, gate.

Starts SmolLM2-135M-Instruct (edge) and Qwen2.5-Coder-0.5B-Instruct (cloud stand-in, and the
LLM judge) with ``python -m app.local_models_server`` on free loopback ports (files from ``make
llm-setup``), the router service in-process on loopback with the bundled router, a SQLite live
store, ``DARS_RECORD_PROMPTS`` and shadow sampling on every request, and sends a seeded sample of
real GSM8K (test split) and NQ-open prompts (``../shared/data/prompts-*.jsonl.gz``) through the
OpenAI SDK. Each request is shadow-sampled (``--edge-samples`` extra edge decodes, one more cloud
answer) and every answer is graded by the judge: ``--judge llm`` (Qwen with the service's
rubric, the default) or ``--judge grader`` (checkable answers against the gold, through
``DARS_SHADOW_GRADER``). Then the operator's commands run as a subprocess each::

    dars-train live export --store sqlite:///WORK/live.db --out WORK/observations.jsonl.gz
    dars-train live retrain --store sqlite:///WORK/live.db --state-dir WORK/loop \\
        --serving router_models/pretrained/default.onnx --url http://127.0.0.1:PORT \\
        --min-queries M --holdout H

and, if the gate promoted, one more request shows which router file decided it. Since the
answers are kept, the report also checks the judge against the gold answers. Writes a Markdown
report. Run from the repository root (3 minutes on two shared cores; the committed
``bench/results/live-demo.md``)::

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python bench/live_demo.py \\
        --per-dataset 6 --holdout 0.5 --min-queries 3 --out bench/results/live-demo.md
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import random
import re
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import openai

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the loopback uvicorn helper of the test suite

from integration.upstream_server import ServerThread  # noqa: E402
from pydantic import SecretStr  # noqa: E402

from app.main import bundled_router_path, create_app  # noqa: E402
from app.settings import Settings  # noqa: E402
from router_models.collect.grading import grade_numeric, grade_short  # noqa: E402
from router_models.live.records import Grade, LiveRecord  # noqa: E402
from router_models.live.store import SqliteStore  # noqa: E402

MODELS = Path(os.environ.get("DARS_CACHE", Path.home() / ".cache" / "dars-router")) / "models"
EDGE_FILE, EDGE_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2-135m-instruct"
CLOUD_FILE, CLOUD_NAME = "Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf", "qwen2.5-coder-0.5b-instruct"
DATASETS = (("gsm8k", "test"), ("nq-open", "test"))
SYSTEM = {
    "gsm8k": "Solve the math problem briefly. End with 'The answer is' and the number.",
    "nq-open": "Answer the question with a short phrase only.",
}
MAX_TOKENS = {"gsm8k": 48, "nq-open": 24}
ADMIN = "live-demo-admin"
TIMEOUT_S = 900.0  # generous: other jobs share the cores
GOLDS_ENV = "DARS_LIVE_DEMO_GOLDS"  # the grader's gold answers, a JSON file {prompt: row}


def grade(query: str, answer: str) -> float | None:
    """The ``--judge grader`` callable (``DARS_SHADOW_GRADER=live_demo:grade``): the answer
    graded against the gold of its prompt (GSM8K: the last number; NQ-open: an alias is in it).
    The service imports this module again by name, so the golds travel in a file."""
    rows: dict[str, dict[str, Any]] = json.loads(Path(os.environ[GOLDS_ENV]).read_text())
    row = rows.get(query)
    return None if row is None else gold_grade(row, answer)


def gold_grade(row: dict[str, Any], text: str) -> float:
    if row["dataset"] == "gsm8k":
        return grade_numeric(text, row["meta"]["answer"]).score
    return grade_short(text, row["meta"]["answers"]).score


def prompts(data: Path, per_dataset: int, seed: int) -> list[dict[str, Any]]:
    """``per_dataset`` seeded prompts of each dataset, interleaved."""
    chosen: list[list[dict[str, Any]]] = []
    for name, split in DATASETS:
        with gzip.open(data / f"prompts-{name}.jsonl.gz", "rt", encoding="utf-8") as handle:
            rows = [row for line in handle if (row := json.loads(line))["split"] == split]
        chosen.append(random.Random(seed).sample(rows, per_dataset))
    return [row for pair in zip(*chosen, strict=True) for row in pair]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@contextmanager
def model_server(file: str, alias: str, log: Path) -> Iterator[str]:
    """One ``app.local_models_server`` on a free loopback port; yields its ``.../v1`` URL."""
    port = _free_port()
    command = [
        sys.executable, "-m", "app.local_models_server", "--model", str(MODELS / file),
        "--alias", alias, "--port", str(port), "--threads", "1", "--exit-with-parent",
    ]  # fmt: skip
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
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)


def ask(client: openai.OpenAI, row: dict[str, Any], seed: int) -> tuple[str, str]:
    """One request through the router: (request id, route)."""
    raw = client.chat.completions.with_raw_response.create(
        model="router",
        messages=[
            {"role": "system", "content": SYSTEM[row["dataset"]]},
            {"role": "user", "content": row["prompt"]},
        ],
        max_tokens=MAX_TOKENS[row["dataset"]],
        temperature=0.0,
        seed=seed,
    )
    raw.parse()
    return str(raw.headers["x-request-id"]), str(raw.headers["x-dars-route"])


def _counter(url: str, name: str, result: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=30).text
    match = re.search(rf'^{name}\{{result="{result}"\}} (\S+)$', text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def wait_for_shadow(url: str, jobs: int, timeout_s: float) -> float:
    """Until the sampler has finished ``jobs`` jobs; the seconds it took."""
    started = time.monotonic()
    name = "dars_shadow_requests_total"
    while _counter(url, name, "done") + _counter(url, name, "failed") < jobs:
        if time.monotonic() - started > timeout_s:
            raise RuntimeError(f"shadow sampling did not finish {jobs} jobs in {timeout_s} s")
        time.sleep(2.0)
    return time.monotonic() - started


def store_rows(db: Path) -> tuple[list[LiveRecord], list[Grade]]:
    store = SqliteStore(db)
    try:
        return list(store.records()), list(store.grades())
    finally:
        store.close()


def dars_train(*args: str) -> str:
    """Run ``dars-train`` (the installed entry point) and return its output."""
    script = Path(sys.executable).with_name("dars-train")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "router_models.cli"]
    done = subprocess.run(
        [*command, *args], cwd=REPO, capture_output=True, text=True, check=False, timeout=900
    )
    if done.returncode != 0:
        raise RuntimeError(f"dars-train {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout + done.stderr


def judge_table(
    records: Sequence[LiveRecord], grades: Sequence[Grade], golds: dict[str, Any]
) -> list[str]:
    """Per model: answers, gold accuracy, mean judge grade, and the judge on right/wrong."""
    prompt_of = {r.request_id: r.prompt for r in records}
    lines = [
        "| model | graded answers | correct (gold) | mean grade | mean grade, correct | "
        "mean grade, wrong |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for model in (EDGE_NAME, CLOUD_NAME):
        pairs = [
            (gold_grade(golds[prompt], g.response or ""), g.score)
            for g in grades
            if g.model == model and (prompt := prompt_of.get(g.request_id)) in golds
        ]
        if not pairs:
            continue
        right = [s for c, s in pairs if c == 1.0]
        wrong = [s for c, s in pairs if c != 1.0]

        def mean(values: list[float]) -> str:
            return f"{statistics.fmean(values):.2f}" if values else "–"

        lines.append(
            f"| `{model}` | {len(pairs)} | {len(right)} | {mean([s for _, s in pairs])} | "
            f"{mean(right)} | {mean(wrong)} |"
        )
    return lines


def _uptime() -> str:
    return ", ".join(f"{v:.1f}" for v in os.getloadavg())


def _cpu() -> str:
    return f"{os.cpu_count()} CPUs, {platform.machine()}, {platform.processor() or 'unknown'}"


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--per-dataset", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0, help="prompt sample and request seed")
    parser.add_argument("--judge", choices=("llm", "grader"), default="llm")
    parser.add_argument("--edge-samples", type=int, default=2, help="extra edge decodes")
    parser.add_argument("--cloud-samples", type=int, default=1, help="extra cloud answers")
    parser.add_argument("--holdout", type=float, default=0.3, help="held-out share of queries")
    parser.add_argument("--min-queries", type=int, default=5, help="gate: smallest slice")
    parser.add_argument("--margin", type=float, default=1.0, help="gate: APGR points")
    parser.add_argument("--work", type=Path, default=None, help="store, state (default: temp)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    router = bundled_router_path()
    if router is None:
        raise SystemExit("no bundled router (router_models/pretrained/default.onnx)")
    work = args.work or Path(tempfile.mkdtemp(prefix="dars-live-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    db, state, obs = work / "live.db", work / "loop", work / "observations.jsonl.gz"
    rows = prompts(args.data, args.per_dataset, args.seed)
    golds = {row["prompt"]: row for row in rows}
    (work / "golds.json").write_text(json.dumps(golds), encoding="utf-8")
    os.environ[GOLDS_ENV] = str(work / "golds.json")
    judge: dict[str, Any] = {"shadow_judge": "llm"}
    if args.judge == "grader":
        judge = {"shadow_judge": "grader", "shadow_grader": "live_demo:grade"}
    load_before, started_at, started = _uptime(), datetime.now(UTC), time.perf_counter()
    routes: dict[str, int] = {}
    with (
        model_server(EDGE_FILE, EDGE_NAME, work / "edge.log") as edge_url,
        model_server(CLOUD_FILE, CLOUD_NAME, work / "cloud.log") as cloud_url,
    ):
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            router_model=router,
            edge_base_url=edge_url, edge_model=EDGE_NAME,
            cloud_base_url=cloud_url, cloud_model=CLOUD_NAME,
            cloud_price_input_per_mtok=0.0, cloud_price_output_per_mtok=0.0,
            onnx_threads=1, torch_threads=1, embedding_threads=1,
            upstream_read_timeout_s=TIMEOUT_S, upstream_backoff_s=0.0,
            admin_token=SecretStr(ADMIN), live_store=SecretStr(f"sqlite:///{db}"),
            record_prompts=True, shadow_rate=1.0, shadow_edge_samples=args.edge_samples,
            shadow_cloud_samples=args.cloud_samples, shadow_calls_per_minute=10_000,
            shadow_queue_size=10_000, **judge,
        )  # fmt: skip
        server = ServerThread(create_app(settings), lifespan="on").start()
        try:
            with openai.OpenAI(
                base_url=f"{server.url}/v1", api_key="-", timeout=TIMEOUT_S, max_retries=0
            ) as client:
                for number, row in enumerate(rows, 1):
                    _, route = ask(client, row, args.seed)
                    routes[route] = routes.get(route, 0) + 1
                    print(f"[{number}/{len(rows)}] {row['query_id']} -> {route}", file=sys.stderr)
                sent_s = time.perf_counter() - started
                shadow_s = wait_for_shadow(server.url, len(rows), TIMEOUT_S)
                grades_ok = _counter(server.url, "dars_shadow_grades_total", "ok")
                unparsed = _counter(server.url, "dars_shadow_grades_total", "unparsed")
                while len(store_rows(db)[1]) < grades_ok:  # the writer batches
                    time.sleep(0.5)
                export_out = dars_train(
                    "live", "export", "--store", f"sqlite:///{db}", "--out", str(obs)
                )
                retrain_args = [
                    "live", "retrain", "--store", f"sqlite:///{db}", "--state-dir", str(state),
                    "--serving", str(router), "--url", server.url, "--admin-token", ADMIN,
                    "--holdout", str(args.holdout), "--min-queries", str(args.min_queries),
                    "--margin", str(args.margin),
                ]  # fmt: skip
                dars_train(*retrain_args)
                decisions = [
                    json.loads(line)
                    for line in (state / "decisions.jsonl").read_text().splitlines()
                ]
                after: list[str] = []
                if decisions[-1]["event"] == "promote":
                    request_id, route = ask(client, rows[0], args.seed)
                    ready = httpx.get(f"{server.url}/readyz", timeout=30).json()
                    time.sleep(2.0)
                    record = next(r for r in store_rows(db)[0] if r.request_id == request_id)
                    after = [
                        f"- After the promotion, `/readyz` reports `{ready['router']['path']}`; "
                        f"request `{request_id}` went to `{route}` and its record names router "
                        f"sha256 `{record.router_sha256}`.",
                    ]
        finally:
            server.stop()
    elapsed, load_after = time.perf_counter() - started, _uptime()
    records, grades = store_rows(db)
    by_model: dict[str, int] = {}
    for g in grades:
        by_model[g.model] = by_model.get(g.model, 0) + 1
    shown = " ".join(shlex.quote(a) for a in retrain_args)
    shown = shown.replace(str(db), "WORK/live.db").replace(str(state), "WORK/loop")
    shown = shown.replace(str(router), "router_models/pretrained/default.onnx")
    shown = shown.replace(server.url, "http://127.0.0.1:PORT")
    command = (
        "OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python bench/live_demo.py "
        f"--per-dataset {args.per_dataset} --seed {args.seed} --judge {args.judge} "
        f"--edge-samples {args.edge_samples} --cloud-samples {args.cloud_samples} "
        f"--holdout {args.holdout} --min-queries {args.min_queries} --margin {args.margin:g} "
        f"--out {args.out or '-'}"
    )
    judge_name = f"LLM judge `{CLOUD_NAME}` (the service's rubric, 1-10)"
    if args.judge == "grader":
        judge_name = "the gold answers (`--judge grader`, through `DARS_SHADOW_GRADER`)"
    report = "\n".join(
        [
            "# The live loop with real local models",
            "",
            'Generated by `bench/live_demo.py` (issue 9, "Proof: end to end with real models"):',
            "",
            f"    {command}",
            "",
            f"- Date: {started_at:%Y-%m-%d %H:%M} UTC; wall time {elapsed / 60:.1f} min "
            f"(requests sent in {sent_s / 60:.1f} min, shadow backlog done "
            f"{shadow_s / 60:.1f} min later).",
            f"- CPU: {_cpu()}; shared with other jobs. Load average (1, 5, 15 min) before "
            f"{load_before}, after {load_after}.",
            f"- Models (llama.cpp via xllamacpp, one decoding thread each, loopback): edge "
            f"SmolLM2-135M-Instruct Q4_1 (`{EDGE_NAME}`), cloud Qwen2.5-Coder-0.5B-Instruct "
            f"Q4_K_M (`{CLOUD_NAME}`). Serving router at the start: the bundled "
            "`router_models/pretrained/default.onnx`.",
            f"- Traffic: {args.per_dataset} GSM8K test and {args.per_dataset} NQ-open prompts "
            f"(`../shared/data/prompts-*.jsonl.gz`, `random.Random({args.seed}).sample`), one "
            "request each, greedy, max_tokens "
            f"{MAX_TOKENS['gsm8k']} (GSM8K) / {MAX_TOKENS['nq-open']} (NQ-open). Routes: "
            + ", ".join(f"{k} {v}" for k, v in sorted(routes.items()))
            + ".",
            f"- Live loop: SQLite store, prompts and answers kept, shadow rate 1: "
            f"{args.edge_samples} extra edge decodes and {args.cloud_samples} more cloud "
            "answer(s) per request (temperature 0.7, seeds 1000+), every answer (the served "
            f"one too) graded by {judge_name}.",
            f"- Store: {len(records)} records, {len(grades)} grades ("
            + ", ".join(f"`{k}` {v}" for k, v in sorted(by_model.items()))
            + f"); {int(unparsed)} judge replies without a readable rating.",
            f"- Export: `{export_out.strip().removeprefix('dars-train: ')}`".replace(
                str(obs), "WORK/observations.jsonl.gz"
            ),
            "",
            "## The judge against the gold answers",
            "",
            "Every graded answer re-graded against its gold answer (GSM8K: the last number; "
            "NQ-open: a gold alias is contained in the answer), with the judge's grade beside.",
            "",
            *judge_table(records, grades, golds),
            "",
            "## Retrain and gate",
            "",
            f"    dars-train {shown}",
            "",
            "Decision log (`WORK/loop/decisions.jsonl`), one JSON line per decision:",
            "",
            "```json",
            *(json.dumps(d, sort_keys=True) for d in decisions),
            "```",
            "",
            *after,
            "",
        ]
    )
    report = report.replace(str(work), "WORK")
    print(report)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
