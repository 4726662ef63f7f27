"""Confidence cascade vs trained router with real local models: accuracy per cloud call.

Starts SmolLM2-135M-Instruct (edge) and Qwen2.5-Coder-0.5B-Instruct (cloud stand-in) with
``python -m app.local_models_server`` on free loopback ports (files from ``make llm-setup`` in
``~/.cache/dars-router/models``; one decoding thread each, the edge with k parallel slots), the
router service in-process on loopback (bundled router, its default threshold), and sends real
GSM8K (test split) and NQ-open prompts (``prompts-*.jsonl.gz``, gold answers in ``meta``, a
seeded sample) through the OpenAI SDK four ways, one request each, same body and seed:

- ``smollm2-135m-instruct`` and ``qwen2.5-coder-0.5b-instruct``: edge only, cloud only;
- ``router``: the trained router;
- ``router-cascade-<t>``: the cascade, k edge samples, escalating when their normalised
  semantic entropy is above ``t``.

The cascade at the server's default threshold 0 is also derived from the same requests, without
a request of its own: a sample set with entropy 0 is kept at any threshold (the cascade's own
answer), and any other escalates, where the cloud answers the same body and seed (the cloud-only
request). Grading is the collector's (GSM8K: the last number equals the gold answer; NQ-open: a
gold alias is contained in the answer). Writes a Markdown report: accuracy, cloud calls, edge
samples, accuracy per cloud call, latency, and one row per prompt. Run from the repository root
(25 prompts per dataset: about 9 minutes on 2 shared cores)::

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python bench/cascade_local.py \\
        --per-dataset 25 --out bench/results/cascade-local.md
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import openai

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # bench._local when run as a script

from bench._local import (  # noqa: E402
    CLOUD_FILE,
    CLOUD_NAME,
    DATASETS,
    DEFAULT_DATA,
    EDGE_FILE,
    EDGE_NAME,
    bundled_router,
    cpu_line,
    gold_grade,
    load_average,
    model_server,
    prompts,
    router_service,
    write_report,
)

SYSTEM = {
    "gsm8k": (
        "Solve the math problem in a few short sentences, no code. "
        "End with 'The answer is' followed by the number."
    ),
    "nq-open": "Answer the question with a short phrase only.",
}
MAX_TOKENS = {"gsm8k": 256, "nq-open": 24}
TEMPERATURE = 0.0  # the client asks for greedy answers; the cascade samples at its own 0.7


@dataclass(frozen=True)
class Answer:
    """One request's outcome."""

    mode: str
    query_id: str
    dataset: str
    correct: float
    route: str
    edge_samples: int
    cloud_calls: int
    seconds: float
    truncated: bool = False
    entropy: float | None = None
    decision: str | None = None
    text: str = ""


def gold(row: dict[str, Any]) -> str:
    if row["dataset"] == "gsm8k":
        return str(row["meta"]["answer"])
    return " / ".join(row["meta"]["answers"])


def ask(client: openai.OpenAI, model: str, row: dict[str, Any], seed: int) -> Answer:
    messages: Any = [
        {"role": "system", "content": SYSTEM[row["dataset"]]},
        {"role": "user", "content": row["prompt"]},
    ]
    started = time.perf_counter()
    raw = client.chat.completions.with_raw_response.create(
        model=model,
        messages=messages,
        max_tokens=MAX_TOKENS[row["dataset"]],
        temperature=TEMPERATURE,
        seed=seed,
    )
    seconds = time.perf_counter() - started
    choice = raw.parse().choices[0]
    text = choice.message.content or ""
    headers = raw.headers
    route = headers["x-dars-route"]
    k = int(headers.get("x-dars-k", "0"))
    entropy = headers.get("x-dars-entropy")
    return Answer(
        mode=model,
        query_id=row["query_id"],
        dataset=row["dataset"],
        correct=gold_grade(row, text),
        route=route,
        edge_samples=k + int(k == 0 and route == "edge"),
        cloud_calls=int(route == "cloud"),
        seconds=seconds,
        truncated=choice.finish_reason == "length",
        entropy=None if entropy is None else float(entropy),
        decision=headers.get("x-dars-decision"),
        text=text,
    )


def derived_cascade(cascade: Answer, cloud: Answer, threshold: float) -> Answer:
    """The cascade at a lower ``threshold`` than ``cascade``'s, from the same requests: kept
    when the entropy is at or below it (then the real run kept it too), else the cloud's answer
    to the same body and seed, after the same k samples."""
    assert cascade.entropy is not None
    mode = f"cascade t={threshold:g} (derived)"
    if cascade.entropy <= threshold or cascade.route == "cloud":  # the real run's answer
        return replace(cascade, mode=mode)
    return replace(
        cascade,
        mode=mode,
        correct=cloud.correct,
        route="cloud",
        cloud_calls=1,
        seconds=cascade.seconds + cloud.seconds,
        truncated=cloud.truncated,
        decision="escalate",
    )


def _per_cloud(value: float, cloud: int) -> str:
    return f"{value / cloud:.2f}" if cloud else "–"


def summary(answers: Sequence[Answer], modes: Sequence[str]) -> list[str]:
    lines = [
        "| mode | dataset | n | accuracy | cloud calls | edge samples | accuracy per cloud call "
        "| gain over edge per cloud call | mean s | median s | cut at max_tokens |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    edge_mode = modes[0]
    for dataset in [name for name, _ in DATASETS] + ["all"]:
        edge_correct = sum(
            a.correct for a in answers if a.mode == edge_mode and dataset in (a.dataset, "all")
        )
        for mode in modes:
            rows = [a for a in answers if a.mode == mode and dataset in (a.dataset, "all")]
            if not rows:
                continue
            correct = sum(a.correct for a in rows)
            cloud = sum(a.cloud_calls for a in rows)
            seconds = [a.seconds for a in rows]
            lines.append(
                f"| {mode} | {dataset} | {len(rows)} | {correct / len(rows):.2f} | {cloud} "
                f"| {sum(a.edge_samples for a in rows)} | {_per_cloud(correct, cloud)} "
                f"| {_per_cloud(correct - edge_correct, cloud)} "
                f"| {statistics.fmean(seconds):.1f} | {statistics.median(seconds):.1f} "
                f"| {sum(a.truncated for a in rows)} |"
            )
    return lines


def per_prompt(
    rows: Sequence[dict[str, Any]], answers: Sequence[Answer], modes: Sequence[str]
) -> list[str]:
    by = {(a.mode, a.query_id): a for a in answers}
    cascade_mode = modes[-1]
    lines = [
        "| query | gold | " + " | ".join(modes) + " | entropy |",
        "|---|---|" + "---|" * len(modes) + "---:|",
    ]
    for row in rows:
        cells = []
        for mode in modes:
            answer = by[(mode, row["query_id"])]
            cells.append(f"{'✓' if answer.correct else '✗'} {answer.route}")
        entropy = by[(cascade_mode, row["query_id"])].entropy
        gold_text = gold(row).replace("|", "/")
        lines.append(
            f"| {row['query_id']} | {gold_text[:40]} | " + " | ".join(cells) + f" | {entropy:.2f} |"
        )
    return lines


def decisions(answers: Sequence[Answer], cascade_mode: str) -> list[str]:
    """What the cascade decided, and how repeatable the cloud's answers were."""
    by = {(a.mode, a.query_id): a for a in answers}
    cascade = [a for a in answers if a.mode == cascade_mode]
    lines = [
        "| dataset | entropy of the k samples | prompts | decision | correct | edge only correct |",
        "|---|---:|---:|---|---:|---:|",
    ]
    groups = sorted({(a.dataset, a.entropy or 0.0, a.decision or "-") for a in cascade})
    for dataset, entropy, decision in groups:
        rows = [
            a
            for a in cascade
            if (a.dataset, a.entropy or 0.0, a.decision or "-") == (dataset, entropy, decision)
        ]
        edge = sum(by[(EDGE_NAME, a.query_id)].correct for a in rows)
        lines.append(
            f"| {dataset} | {entropy:.3f} | {len(rows)} | {decision} "
            f"| {sum(a.correct for a in rows):g} | {edge:g} |"
        )
    repeats = [
        (a, by[(CLOUD_NAME, a.query_id)])
        for a in answers
        if a.mode not in (CLOUD_NAME, EDGE_NAME) and a.route == "cloud"
    ]
    differ = [(a, c) for a, c in repeats if a.text != c.text]
    flips = sum(a.correct != c.correct for a, c in differ)
    lines += [
        "",
        f"Repeatability: the cloud answered {len(repeats)} requests of `router` and the cascade "
        f"with the same body and seed as its cloud-only request; {len(differ)} of those answers "
        f"differ in text from the cloud-only one, {flips} in grade (llama.cpp is not bit-exact "
        "between a fresh prompt and a cached one).",
    ]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--per-dataset", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0, help="prompt sample and request seed")
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--threshold", default="0.6", help="cascade entropy threshold")
    parser.add_argument("--logs", type=Path, default=Path("/tmp"), help="model server logs")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--answers", type=Path, default=None, help="JSON lines of every answer")
    args = parser.parse_args()
    router = bundled_router()
    rows = prompts(args.data, args.per_dataset, args.seed)
    cascade_mode = f"router-cascade-{args.threshold}"
    modes = [EDGE_NAME, CLOUD_NAME, "router", cascade_mode]
    load_before, started_at, started = load_average(), datetime.now(UTC), time.perf_counter()
    answers: list[Answer] = []
    router_threshold = "?"
    with (
        model_server(EDGE_FILE, EDGE_NAME, args.logs / "cascade-edge.log", args.k) as edge_url,
        model_server(CLOUD_FILE, CLOUD_NAME, args.logs / "cascade-cloud.log", 1) as cloud_url,
        router_service(router, edge_url, cloud_url, cascade_k=args.k) as (_, client),
    ):
        for number, row in enumerate(rows, 1):
            for mode in modes:
                answers.append(ask(client, mode, row, args.seed))
                print(f"[{number}/{len(rows)}] {answers[-1]}", file=sys.stderr, flush=True)
        probe = client.chat.completions.with_raw_response.create(
            model="router", messages=[{"role": "user", "content": "hi"}], max_tokens=1
        )
        router_threshold = probe.headers.get("x-dars-threshold", "?")
    elapsed, load_after = time.perf_counter() - started, load_average()
    by = {(a.mode, a.query_id): a for a in answers}
    derived = []
    if float(args.threshold) > 0.0:
        derived = [
            derived_cascade(by[(cascade_mode, r["query_id"])], by[(CLOUD_NAME, r["query_id"])], 0.0)
            for r in rows
        ]
    all_modes = modes + sorted({a.mode for a in derived})
    command = (
        "OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python bench/cascade_local.py "
        f"--per-dataset {args.per_dataset} --seed {args.seed} --k {args.k} "
        f"--threshold {args.threshold} --out {args.out or '-'}"
    )
    report = "\n".join(
        [
            "# Confidence cascade vs trained router, real local models",
            "",
            'Generated by `bench/cascade_local.py` (issue 12, "Proof with real models"):',
            "",
            f"    {command}",
            "",
            f"- Date: {started_at:%Y-%m-%d %H:%M} UTC; wall time {elapsed / 60:.1f} min.",
            cpu_line(load_before, load_after, ": latencies are on a contended machine"),
            f"- Models (llama.cpp via xllamacpp, one decoding thread each, loopback): edge "
            f"SmolLM2-135M-Instruct Q4_1 (`{EDGE_NAME}`, {args.k} parallel slots), cloud "
            f"Qwen2.5-Coder-0.5B-Instruct Q4_K_M (`{CLOUD_NAME}`).",
            f"- Sample: {args.per_dataset} GSM8K test and {args.per_dataset} NQ-open prompts "
            f"(`../shared/data/prompts-*.jsonl.gz`, `random.Random({args.seed}).sample`); "
            f"request temperature {TEMPERATURE:g} (greedy; the cascade then samples at its "
            f"default 0.7, seeds {args.seed}..{args.seed + args.k - 1}), seed {args.seed}, "
            "max_tokens "
            f"{MAX_TOKENS['gsm8k']} (GSM8K) / {MAX_TOKENS['nq-open']} (NQ-open); system "
            "prompts in the script. Graded with `router_models.collect.grading` (GSM8K: the "
            "last number equals the gold answer; NQ-open: a gold alias is contained in the "
            "answer).",
            f"- Modes: edge only and cloud only (the upstream model names), `router` (the "
            f"bundled trained router at its default threshold, {router_threshold}), "
            f"`{cascade_mode}` (k={args.k} edge samples, auto meaning grouping, escalate when "
            f"the normalised semantic entropy is above {args.threshold}), and the cascade at "
            "the server's default threshold 0 derived from the same requests (entropy 0: its "
            "kept answer; otherwise the cloud-only answer to the same body and seed, latency "
            "= sampling + cloud).",
            "- Edge samples: edge calls (k per sampled cascade request). Accuracy per cloud "
            "call: correct answers / cloud calls; gain over edge per cloud call: (correct - "
            "edge-only correct) / cloud calls. Latency: seconds per request as the client saw "
            "it. Cut at max_tokens: answers that stopped at the token limit.",
            "",
            "## Summary",
            "",
            *summary(answers + derived, all_modes),
            "",
            "## Cascade decisions",
            "",
            f"`{cascade_mode}` per normalised entropy of its samples (k={args.k}: 0 = all "
            "agree, 0.579 = two of three agree, 1 = all differ); correct: graded answers of the "
            "cascade (kept: the majority edge sample; escalated: the cloud).",
            "",
            *decisions(answers, cascade_mode),
            "",
            "## Per prompt",
            "",
            "✓/✗: graded correct or not; edge/cloud: the upstream that answered; entropy: the "
            f"cascade's normalised semantic entropy of its {args.k} samples.",
            "",
            *per_prompt(rows, answers, modes),
            "",
        ]
    )
    write_report(report, args.out)
    if args.answers is not None:
        with args.answers.open("w", encoding="utf-8") as sink:
            sink.writelines(json.dumps(answer.__dict__) + "\n" for answer in answers)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
