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
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import openai
from pydantic import SecretStr

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # bench._local when run as a script

from bench._local import (  # noqa: E402
    CLOUD_FILE,
    CLOUD_NAME,
    DEFAULT_DATA,
    EDGE_FILE,
    EDGE_NAME,
    TIMEOUT_S,
    bundled_router,
    cpu_line,
    gold_grade,
    load_average,
    model_server,
    prompts,
    router_service,
    write_report,
)
from router_models.live.records import Grade, LiveRecord  # noqa: E402
from router_models.live.store import SqliteStore  # noqa: E402

SYSTEM = {
    "gsm8k": "Solve the math problem briefly. End with 'The answer is' and the number.",
    "nq-open": "Answer the question with a short phrase only.",
}
MAX_TOKENS = {"gsm8k": 48, "nq-open": 24}
ADMIN = "live-demo-admin"
GOLDS_ENV = "DARS_LIVE_DEMO_GOLDS"  # the grader's gold answers, a JSON file {prompt: row}


def grade(query: str, answer: str) -> float | None:
    """The ``--judge grader`` callable (``DARS_SHADOW_GRADER=live_demo:grade``): the answer
    graded against the gold of its prompt (GSM8K: the last number; NQ-open: an alias is in it).
    The service imports this module again by name, so the golds travel in a file."""
    rows: dict[str, dict[str, Any]] = json.loads(Path(os.environ[GOLDS_ENV]).read_text())
    row = rows.get(query)
    return None if row is None else gold_grade(row, answer)


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


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
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
    router = bundled_router()
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
    load_before, started_at, started = load_average(), datetime.now(UTC), time.perf_counter()
    routes: dict[str, int] = {}
    with (
        model_server(EDGE_FILE, EDGE_NAME, work / "edge.log") as edge_url,
        model_server(CLOUD_FILE, CLOUD_NAME, work / "cloud.log") as cloud_url,
        router_service(
            router,
            edge_url,
            cloud_url,
            cloud_price_input_per_mtok=0.0,
            cloud_price_output_per_mtok=0.0,
            admin_token=SecretStr(ADMIN),
            live_store=SecretStr(f"sqlite:///{db}"),
            record_prompts=True,
            shadow_rate=1.0,
            shadow_edge_samples=args.edge_samples,
            shadow_cloud_samples=args.cloud_samples,
            shadow_calls_per_minute=10_000,
            shadow_queue_size=10_000,
            **judge,
        ) as (url, client),  # fmt: skip
    ):
        for number, row in enumerate(rows, 1):
            _, route = ask(client, row, args.seed)
            routes[route] = routes.get(route, 0) + 1
            print(f"[{number}/{len(rows)}] {row['query_id']} -> {route}", file=sys.stderr)
        sent_s = time.perf_counter() - started
        shadow_s = wait_for_shadow(url, len(rows), TIMEOUT_S)
        grades_ok = _counter(url, "dars_shadow_grades_total", "ok")
        unparsed = _counter(url, "dars_shadow_grades_total", "unparsed")
        while len(store_rows(db)[1]) < grades_ok:  # the writer batches
            time.sleep(0.5)
        export_out = dars_train("live", "export", "--store", f"sqlite:///{db}", "--out", str(obs))
        retrain_args = [
            "live", "retrain", "--store", f"sqlite:///{db}", "--state-dir", str(state),
            "--serving", str(router), "--url", url, "--admin-token", ADMIN,
            "--holdout", str(args.holdout), "--min-queries", str(args.min_queries),
            "--margin", str(args.margin),
        ]  # fmt: skip
        dars_train(*retrain_args)
        decisions = [
            json.loads(line) for line in (state / "decisions.jsonl").read_text().splitlines()
        ]
        after: list[str] = []
        if decisions[-1]["event"] == "promote":
            request_id, route = ask(client, rows[0], args.seed)
            ready = httpx.get(f"{url}/readyz", timeout=30).json()
            time.sleep(2.0)
            record = next(r for r in store_rows(db)[0] if r.request_id == request_id)
            after = [
                f"- After the promotion, `/readyz` reports `{ready['router']['path']}`; "
                f"request `{request_id}` went to `{route}` and its record names router "
                f"sha256 `{record.router_sha256}`.",
            ]
    elapsed, load_after = time.perf_counter() - started, load_average()
    records, grades = store_rows(db)
    by_model: dict[str, int] = {}
    for g in grades:
        by_model[g.model] = by_model.get(g.model, 0) + 1
    shown = " ".join(shlex.quote(a) for a in retrain_args)
    shown = shown.replace(str(db), "WORK/live.db").replace(str(state), "WORK/loop")
    shown = shown.replace(str(router), "router_models/pretrained/default.onnx")
    shown = shown.replace(url, "http://127.0.0.1:PORT")
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
            cpu_line(load_before, load_after),
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
    write_report(report.replace(str(work), "WORK"), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
