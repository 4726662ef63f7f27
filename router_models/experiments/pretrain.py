"""The default router the service ships: an MLP on permissively licensed outcome data only.

Data: RouteLLM's released GSM8K and MMLU outcomes of ``mixtral-8x7b-instruct-v0.1`` (edge) vs
``gpt-4-1106-preview`` (cloud) (Apache-2.0; GSM8K and MMLU are MIT) and, as a candidate,
LLMRouter's outcomes of 7 open models (MIT). RouterDC, MoT and the ``gsm8k-*-multi`` files
carry no licence and are not used. 20% of the RouteLLM queries (seeded hash) are held out
for the model card's metrics and the calibration quantiles; the label scheme and whether
LLMRouter helps are chosen on a further 20% validation split of the rest; the shipped file
is the chosen candidate fitted on the remaining training queries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from router_models.contract import DEFAULT_EMBEDDING_MODEL_ID, EMBEDDING_DIM, Calibration
from router_models.evaluate import (
    RouterReport,
    Truth,
    cpt,
    evaluate_router,
    evaluate_routers,
    plot_curves,
    truth_from_observations,
)
from router_models.experiments.common import (
    ReportFiles,
    base_parser,
    drop_test_prompts,
    fit_router,
    fmt,
    limit_threads,
    load_rows,
    make_embedder,
    metric_row,
    model_pairs,
    paired_labels,
    predict,
    query_fold,
    say,
    truth_rows,
)
from router_models.export_onnx import build_metadata, load_router_scores, save_router
from router_models.features import Embedder
from router_models.observations import Observation

__all__ = ["Candidate", "Settings", "main", "run"]

MODULE = "router_models.experiments.pretrain"
EDGE = "mixtral-8x7b-instruct-v0.1"
CLOUD = "gpt-4-1106-preview"


@dataclass(frozen=True)
class Candidate:
    """One training recipe: label scheme and whether LLMRouter's pairs are stacked in."""

    scheme: str
    with_llmrouter: bool

    @property
    def name(self) -> str:
        return f"{self.scheme}{' + llmrouter' if self.with_llmrouter else ''}"


@dataclass(frozen=True)
class Settings:
    """Files, candidates and MLP parameters; the defaults make the shipped file."""

    routellm_files: tuple[str, ...] = ("routellm-gsm8k.jsonl.gz", "routellm-mmlu.jsonl.gz")
    llmrouter_file: str = "llmrouter.jsonl.gz"
    llmrouter_drop_models: tuple[str, ...] = ("llama3-chatqa-1.5-8b", "llama3-chatqa-1.5-70b")
    candidates: tuple[Candidate, ...] = (
        Candidate("dars", False),
        Candidate("dars", True),
        Candidate("single-shot", False),
        Candidate("single-shot", True),
    )
    n_folds: int = 5
    target_recovery: float = 0.8
    mlp_params: dict[str, Any] = field(default_factory=lambda: {"hidden_layer_sizes": (128, 64)})


def _split(
    rows: Sequence[Observation], n_folds: int, seed: int
) -> tuple[list[Observation], list[Observation]]:
    """(rest, held out): the held-out part is fold 0 of a seeded hash of the query id."""
    held = [o for o in rows if query_fold(o.query_id, n_folds, seed) == 0]
    rest = [o for o in rows if query_fold(o.query_id, n_folds, seed) != 0]
    return rest, held


def _fit(
    candidate: Candidate,
    routellm: Sequence[Observation],
    llmrouter: Sequence[Observation],
    embed: Embedder,
    settings: Settings,
    seed: int,
) -> Any:
    sources = [list(routellm)]
    pairs = [[(EDGE, CLOUD)]]
    if candidate.with_llmrouter:
        sources.append(list(llmrouter))
        pairs.append(model_pairs(llmrouter, "extreme"))
    labels = paired_labels(sources, candidate.scheme, "extreme", pairs=pairs)
    return fit_router("mlp", labels, embed, seed=seed, params=settings.mlp_params)


def _truth(rows: Sequence[Observation]) -> Truth:
    return truth_from_observations(rows, EDGE, CLOUD)


def run(
    data_dir: Path,
    out_dir: Path,
    *,
    settings: Settings = Settings(),
    seed: int = 0,
    embed: Embedder | None = None,
    argv: Sequence[str] = (),
) -> dict[str, Path]:
    """Choose, fit, evaluate and write ``default.onnx`` + ``MODEL_CARD.md`` into ``out_dir``."""
    card = ReportFiles(
        out_dir,
        "MODEL_CARD",
        MODULE,
        argv,
        data_dir,
        seeds=f"split and router seed {seed} (held-out = hash fold 0 of {settings.n_folds}; "
        f"validation = fold 0 of {settings.n_folds} under seed {seed + 1})",
    )
    embed = embed or make_embedder()
    routellm: list[Observation] = []
    for name in settings.routellm_files:
        routellm += load_rows(data_dir / name, exclude_flags=("contaminated",))
    rest, held = _split(routellm, settings.n_folds, seed)
    fit_rows, val_rows = _split(rest, settings.n_folds, seed + 1)
    held_prompts = {o.prompt for o in held}
    fit_rows, _ = drop_test_prompts(fit_rows, held_prompts)
    llmrouter = load_rows(
        data_dir / settings.llmrouter_file,
        exclude_flags=("gsm8k_test_overlap", "routellm_mmlu_overlap"),
        drop_models=settings.llmrouter_drop_models,
    )
    llmrouter, _ = drop_test_prompts(llmrouter, held_prompts | {o.prompt for o in val_rows})

    # 1. choose the recipe on the validation split (never on the held-out split)
    val_truth = _truth(val_rows)
    X_val = embed(list(val_truth.prompts))
    validation: dict[str, dict[str, float]] = {}
    for candidate in settings.candidates:
        estimator = _fit(candidate, fit_rows, llmrouter, embed, settings, seed)
        report = evaluate_router(candidate.name, predict(estimator, X_val), val_truth)
        validation[candidate.name] = {
            **metric_row(report),
            "cpt_target": cpt(report.curve, settings.target_recovery),
        }
        say(f"validation {candidate.name}: {validation[candidate.name]}")
    chosen = max(settings.candidates, key=lambda c: validation[c.name]["APGR"])
    cloud_share = validation[chosen.name]["cpt_target"]

    # 2. the shipped router: the chosen recipe on all non-held-out training queries
    train_rows, _ = drop_test_prompts(rest, held_prompts)
    estimator = _fit(chosen, train_rows, llmrouter, embed, settings, seed)
    held_truth = _truth(held)
    X_held = embed(list(held_truth.prompts))
    scores = predict(estimator, X_held)
    calibration = Calibration.from_scores(scores)
    threshold = calibration.threshold_for_cloud_share(cloud_share)
    metadata = build_metadata(
        embedding_model_id=DEFAULT_EMBEDDING_MODEL_ID,
        embedding_dim=EMBEDDING_DIM,
        label_scheme=chosen.scheme,
        default_threshold=float(np.clip(threshold, 0.0, 1.0)),
        calibration=calibration,
        models={"edge": EDGE, "cloud": CLOUD},
        router="mlp",
    )
    onnx_path = save_router(estimator.to_onnx(metadata), out_dir / "default.onnx")
    onnx_scores = load_router_scores(onnx_path, X_held)
    max_diff = float(np.max(np.abs(onnx_scores - scores)))

    # 3. held-out metrics, per dataset and pooled, from the ONNX file itself
    datasets = {o.query_id: o.dataset for o in held}
    evaluations: dict[str, list[RouterReport]] = {}
    for name in ("all", *sorted(set(datasets.values()))):
        keep = np.asarray([name == "all" or datasets[q] == name for q in held_truth.query_ids])
        truth = truth_rows(held_truth, keep)
        evaluations[name] = evaluate_routers({"default.onnx": onnx_scores[keep]}, truth)
    png = plot_curves(
        evaluations["all"], card.png("heldout"), title="default.onnx, held-out RouteLLM queries"
    )
    share_at_threshold = float(np.mean(onnx_scores >= threshold))
    numbers = {
        "chosen": chosen.name,
        "validation": validation,
        "default_threshold": threshold,
        "cloud_share_target": cloud_share,
        "cloud_share_at_threshold_heldout": share_at_threshold,
        "onnx_vs_python_max_abs_diff": max_diff,
        "n": {
            "train_routellm_queries": len({o.query_id for o in train_rows}),
            "llmrouter_queries": len({o.query_id for o in llmrouter})
            if chosen.with_llmrouter
            else 0,
            "validation_queries": len(val_truth.query_ids),
            "heldout_queries": len(held_truth.query_ids),
        },
        "heldout": {k: {r.name: metric_row(r) for r in v} for k, v in evaluations.items()},
        "file_bytes": onnx_path.stat().st_size,
    }
    body = _card(numbers, settings, chosen, png.name)
    files = [*settings.routellm_files, settings.llmrouter_file]
    title = "Model card: default.onnx (DARS Router default)"
    paths = card.write(title, files, body, numbers, json_name="default-metrics.json")
    paths.update({"onnx": onnx_path, "png": png})
    return paths


def _card(numbers: dict[str, Any], settings: Settings, chosen: Candidate, png: str) -> str:
    n = numbers["n"]
    lines = [
        "## What it is",
        "",
        f"- `default.onnx`: an MLP router ({settings.mlp_params['hidden_layer_sizes']} ReLU "
        f"layers, sigmoid output; {numbers['file_bytes'] / 1024:.0f} KiB) on the L2-normalised "
        "all-MiniLM-L6-v2 embedding of the query (input `embedding` float32 [batch, 384]). Output "
        "`score` = probability that the cloud model is needed; the service routes to the cloud "
        "when `score >= threshold`.",
        f"- Trained pair: edge `{EDGE}`, cloud `{CLOUD}` (metadata `dars.models`).",
        f"- Label scheme: **{chosen.scheme}**"
        + (" with LLMRouter's weakest→strongest pair stacked in" if chosen.with_llmrouter else "")
        + " (chosen on the validation split, table below).",
        f"- Default threshold {numbers['default_threshold']:.4f}: sends "
        f"{100 * numbers['cloud_share_target']:.0f}% of queries to the cloud, the share at "
        f"which this recipe recovered {100 * settings.target_recovery:.0f}% of the edge→cloud "
        "quality gap on the validation split (CPT). `dars.calibration` holds score quantiles "
        "on the held-out queries, so an operator can ask for a cloud share instead "
        "(held-out share at the default threshold: "
        f"{100 * numbers['cloud_share_at_threshold_heldout']:.1f}%).",
        f"- ONNX vs Python scores on the held-out queries: max |diff| = "
        f"{numbers['onnx_vs_python_max_abs_diff']:.2e}.",
        "",
        "## Data and licences",
        "",
        "| file | origin | licence | used for |",
        "|---|---|---|---|",
        "| `routellm-gsm8k.jsonl.gz` | lm-sys/RouteLLM GSM8K outcomes (GSM8K test) | Apache-2.0 "
        "(GSM8K: MIT) | train / validation / held-out |",
        "| `routellm-mmlu.jsonl.gz` | lm-sys/RouteLLM MMLU outcomes (MMLU test) | Apache-2.0 "
        "(MMLU: MIT) | train / validation / held-out |",
        "| `llmrouter.jsonl.gz` | ulab-uiuc/LLMRouter, 7 open models (chatqa models dropped: "
        "≈0 on multiple choice, a format artefact) | MIT | candidate extra pairs |",
        "",
        "Not used: RouterDC, MoT-cascade and the `gsm8k-*-multi` files (no licence). Model outputs "
        "remain subject to their providers' terms. RouteLLM's contaminated queries and LLMRouter "
        "rows flagged as GSM8K-test / MMLU overlaps are excluded; no training prompt equals a "
        "held-out or validation prompt (normalised text).",
        "",
        f"Queries: {n['train_routellm_queries']} RouteLLM training queries"
        + (f" + {n['llmrouter_queries']} LLMRouter queries" if chosen.with_llmrouter else "")
        + f"; {n['validation_queries']} validation; {n['heldout_queries']} held out.",
        "",
        "## Recipe choice (validation split, MLP, edge→cloud)",
        "",
        "| recipe | CPT(50%) | CPT(80%) | APGR |",
        "|---|---:|---:|---:|",
    ]
    for name, m in numbers["validation"].items():
        mark = " (chosen)" if name == chosen.name else ""
        lines.append(f"| {name}{mark} | {fmt(m['CPT50'])} | {fmt(m['CPT80'])} | {fmt(m['APGR'])} |")
    lines += ["", "## Held-out metrics (from the ONNX file)", ""]
    for split, table in numbers["heldout"].items():
        lines += [
            f"**{split}**",
            "",
            "| router | CPT(50%) | CPT(80%) | APGR |",
            "|---|---:|---:|---:|",
        ]
        for name, m in table.items():
            lines.append(f"| {name} | {fmt(m['CPT50'])} | {fmt(m['CPT80'])} | {fmt(m['APGR'])} |")
        lines.append("")
    lines += [
        f"![held-out curves]({png})",
        "",
        "## Intended use",
        "",
        "- A starting point for the service's edge/cloud decision on English question-answering, "
        "reasoning and multiple-choice traffic, before any data from your own models exists. "
        "Replace it with a router trained on your own observations (`dars-train`, ideally DARS "
        "labels from several samples per query) as soon as you have them.",
        "- Use the calibration to pick a cloud share you can afford; the threshold is a "
        "default, not a guarantee of quality.",
        "",
        "## Limits",
        "",
        "- Trained on one pair (Mixtral-8x7B vs GPT-4-1106) and two benchmarks; other pairs, "
        "languages, chat, code or long multi-turn prompts are out of distribution. The score "
        "ranks queries by how likely the cloud model is needed for this pair; it says nothing "
        "about a specific answer.",
        "- One observation per query-model pair: DARS labels here are only a soft version of "
        "the single-shot outcome (no distribution to summarise), and the labels are noisy.",
        "- Held-out queries come from the same benchmarks as the training queries (same MMLU "
        "subjects, same GSM8K style): these are in-distribution numbers. Trained on other data "
        "and tested on these benchmarks, query-embedding routers beat random only modestly "
        "and lose to the prompt-length baseline (`router_models/reports/paper-protocol.md`); "
        "expect less than the table above on other traffic.",
        "- The training queries are 80% of the GSM8K and MMLU *test* sets: do not use this "
        "file to report routing results on those benchmarks (it has seen their questions).",
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m router_models.experiments.pretrain``."""
    import sys

    parser = base_parser(__doc__.splitlines()[0], "router_models/pretrained")
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(raw)
    limit_threads(args.threads)
    paths = run(
        Path(args.data),
        Path(args.out),
        seed=args.seed,
        embed=make_embedder(args.cache_dir),
        argv=raw,
    )
    for name, path in paths.items():
        say(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
