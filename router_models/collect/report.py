"""A Markdown report on a collected dataset: accuracy, rewrites, label changes, variance.

It answers the questions a team asks before training on its own observations: how good is
each model, how many rewrites survived the checks, how often does one sampled outcome
(single-shot) disagree with the distribution-aware label (DARS), and is the spread of a
model's outcomes driven by the wording of the query (input side) or by sampling (output side).
Labels and the variance split come from :mod:`router_models.labels`, the trainer's own code.

``python -m router_models.collect.report OBS [--rewrites R] --weak W --strong S --out MD``
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from router_models.collect.rewrite import reason_kind
from router_models.collect.store import JsonlStore
from router_models.labels import LabelSet, make_labels
from router_models.observations import Observation, read_observations

__all__ = ["dataset_report", "label_agreement", "main", "variance_table"]


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _by_dataset(rows: Sequence[Observation]) -> dict[str, list[Observation]]:
    out: dict[str, list[Observation]] = defaultdict(list)
    for r in rows:
        out[r.dataset].append(r)
    out["all"] = list(rows)
    return dict(sorted(out.items(), key=lambda kv: (kv[0] == "all", kv[0])))


def _accuracy_rows(rows: Sequence[Observation]) -> list[list[Any]]:
    table = []
    for dataset, subset in _by_dataset(rows).items():
        for model in sorted({r.model or "" for r in subset}):
            mine = [r for r in subset if r.model == model]
            first = [r.score or 0.0 for r in mine if r.variant_id == 0 and r.sample_id == 0]
            tokens = [r.meta.get("usage", {}).get("completion_tokens", 0) for r in mine]
            latency = [r.meta.get("latency_s", 0.0) for r in mine]
            table.append(
                [
                    dataset,
                    model,
                    len({r.query_id for r in mine}),
                    len(mine),
                    f"{np.mean([r.score for r in mine]):.3f}",
                    f"{np.mean(first):.3f}" if first else "-",
                    f"{np.mean(tokens):.0f}",
                    f"{np.mean(latency):.2f}",
                    f"{sum(r.cost or 0.0 for r in mine):.5f}",
                ]
            )
    return table


def label_agreement(
    rows: Sequence[Observation], weak: str, strong: str, draws: int = 100
) -> dict[str, float]:
    """How single-shot labels compare with DARS labels on the same queries.

    ``disagree``: share of queries whose single-shot label differs from the DARS label
    rounded at 0.5, mean (and std) over ``draws`` seeds; ``unstable``: share of queries whose
    single-shot label is not the same in every draw; ``soft``: share of DARS targets strictly
    between 0.2 and 0.8 (the distribution says "uncertain").
    """
    dars = make_labels(rows, weak, strong, "dars")
    hard = (dars.target >= 0.5).astype(float)
    shots = np.stack(
        [make_labels(rows, weak, strong, "single-shot", seed=s).target for s in range(draws)]
    )
    disagree = (shots != hard).mean(axis=1)
    return {
        "queries": float(len(dars)),
        "disagree": float(disagree.mean()),
        "disagree_std": float(disagree.std()),
        "unstable": float((shots.min(axis=0) != shots.max(axis=0)).mean()),
        "soft": float(((dars.target > 0.2) & (dars.target < 0.8)).mean()),
        "dars_cloud": float(hard.mean()),
        "single_cloud": float(shots.mean()),
    }


def variance_table(labels: LabelSet, multi_variant: np.ndarray) -> list[list[Any]]:
    """Mean input-side and output-side variance per model, all queries and multi-variant ones."""
    table = []
    for name, stats in ((labels.weak_model, labels.weak), (labels.strong_model, labels.strong)):
        for scope, mask in (
            ("all queries", np.ones(len(labels), bool)),
            ("≥2 variants", multi_variant),
        ):
            if not mask.any():
                continue
            vin, vout = stats.var_input[mask].mean(), stats.var_output[mask].mean()
            share = vin / (vin + vout) if vin + vout > 0 else float("nan")
            table.append(
                [name, scope, int(mask.sum()), f"{vin:.4f}", f"{vout:.4f}", f"{share:.2f}"]
            )
    return table


def _rewrite_section(rewrites: Sequence[dict[str, Any]], k: int | None) -> str:
    if not rewrites:
        return "_No rewrite log given._"
    by_dataset: dict[str, list[dict[str, Any]]] = defaultdict(list)
    reasons: Counter[str] = Counter()
    for r in rewrites:
        by_dataset[r["dataset"]].append(r)
        for rejected in r.get("rejected", ()):
            for reason in rejected["reasons"]:
                reasons[reason_kind(reason)] += 1
    rows = []
    for dataset, recs in sorted(by_dataset.items()):
        accepted = sum(len(r["accepted"]) for r in recs)
        rejected = sum(len(r["rejected"]) for r in recs)
        full = sum(1 for r in recs if k is not None and len(r["accepted"]) >= k)
        rows.append(
            [
                dataset,
                len(recs),
                accepted + rejected,
                accepted,
                f"{accepted / max(1, accepted + rejected):.2f}",
                full if k is not None else "-",
            ]
        )
    header = ["dataset", "queries", "candidates", "accepted", "acceptance", f"queries with all {k}"]
    reason_rows = [[reason, count] for reason, count in reasons.most_common()]
    return (
        _table(header, rows)
        + "\n\nWhy candidates were rejected (a candidate can fail several checks):\n\n"
        + _table(["check", "candidates"], reason_rows)
    )


def dataset_report(
    observations: str | Path,
    *,
    weak: str,
    strong: str,
    rewrites: str | Path | None = None,
    k: int | None = None,
    draws: int = 100,
    title: str = "Dataset report",
    preamble: str = "",
) -> str:
    """The report as Markdown (see the module docstring)."""
    rows = read_observations(observations)
    logged = list(JsonlStore.read(rewrites)) if rewrites is not None else []
    variants: dict[str, set[int]] = defaultdict(set)
    for r in rows:
        variants[r.query_id].add(r.variant_id)
    parts = [f"# {title}", preamble.strip()] if preamble.strip() else [f"# {title}"]
    parts.append(
        f"{len(rows):,} observations, {len({r.query_id for r in rows})} queries, "
        f"models: {', '.join(sorted({r.model or '' for r in rows}))}. Variants per query: "
        + ", ".join(
            f"{n} variant(s): {c} queries"
            for n, c in sorted(Counter(len(v) for v in variants.values()).items())
        )
        + "."
    )
    parts.append(
        "## Accuracy per model\n\n"
        "`mean score` is over every observation (variants x decodes); `single shot` uses only "
        "the original wording's first decode.\n\n"
        + _table(
            [
                "dataset",
                "model",
                "queries",
                "obs",
                "mean score",
                "single shot",
                "out tokens",
                "latency s",
                "cost USD",
            ],
            _accuracy_rows(rows),
        )
    )
    parts.append("## Rewrites (input side)\n\n" + _rewrite_section(logged, k))
    agreement_rows = []
    for dataset, subset in _by_dataset(rows).items():
        a = label_agreement(subset, weak, strong, draws)
        agreement_rows.append(
            [
                dataset,
                int(a["queries"]),
                f"{a['disagree']:.3f} ± {a['disagree_std']:.3f}",
                f"{a['unstable']:.3f}",
                f"{a['soft']:.3f}",
                f"{a['single_cloud']:.3f}",
                f"{a['dars_cloud']:.3f}",
            ]
        )
    parts.append(
        f"## Single-shot vs DARS labels ({weak} -> {strong})\n\n"
        f"Single-shot draws one observation per query and model ({draws} seeds); DARS uses all "
        "of them (`router_models.labels`, lambda 0.05, beta 0.2, costs normalised per "
        "dataset). `disagree`: share of queries whose single-shot label differs from the DARS "
        "label rounded at 0.5 (mean ± std over seeds); `unstable`: share of queries whose "
        "single-shot label changes between seeds; `soft`: DARS target strictly between 0.2 "
        "and 0.8; last two columns: share of queries labelled 'cloud needed'.\n\n"
        + _table(
            [
                "dataset",
                "queries",
                "disagree",
                "unstable",
                "soft",
                "cloud (single)",
                "cloud (DARS)",
            ],
            agreement_rows,
        )
    )
    dars = make_labels(rows, weak, strong, "dars")
    multi = np.asarray([len(variants[q]) >= 2 for q in dars.query_ids])
    parts.append(
        "## Input-side vs output-side variance\n\n"
        "Per query and model, the variance of the scores splits exactly into the variance "
        "between wordings (input side: variance of the per-variant means) and the mean "
        "variance between decodes of one wording (output side). Queries with only the "
        "original wording have no input-side variance by construction, so the split is also "
        "shown on queries with at least two wordings.\n\n"
        + _table(
            ["model", "scope", "queries", "input var", "output var", "input share"],
            variance_table(dars, multi),
        )
    )
    return "\n\n".join(parts) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m router_models.collect.report")
    parser.add_argument("observations")
    parser.add_argument("--rewrites", help="the collector's rewrite log (.rewrites.jsonl)")
    parser.add_argument("--k", type=int, help="rewrites asked for per query")
    parser.add_argument("--weak", required=True)
    parser.add_argument("--strong", required=True)
    parser.add_argument("--draws", type=int, default=100)
    parser.add_argument("--title", default="Dataset report")
    parser.add_argument("--preamble", type=Path, help="Markdown file put under the title")
    parser.add_argument("--out", type=Path, help="write here instead of stdout")
    args = parser.parse_args(argv)
    preamble = args.preamble.read_text(encoding="utf-8") if args.preamble else ""
    text = dataset_report(
        args.observations,
        weak=args.weak,
        strong=args.strong,
        rewrites=args.rewrites,
        k=args.k,
        draws=args.draws,
        title=args.title,
        preamble=preamble,
    )
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
