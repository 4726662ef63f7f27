"""The markdown report of :mod:`bench.peers`: one table of systems, one of the bare encoder.

Ratios are to DARS Router at the same concurrency: to its cache-hit row and to its
(default-encoder) cache-miss row. Above 1 means the figure is larger than DARS Router's: worse
for latency and CPU, better for requests per second.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from bench._encoders import EncoderRun
from bench._harness import Run

__all__ = ["Row", "render"]

HIT = "DARS Router, cache hit"
MISS = "DARS Router, cache miss (default encoder)"


@dataclass(frozen=True)
class Row:
    """One system at one concurrency."""

    system: str
    concurrency: int
    run: Run


def _added(row: Row, direct: Run, q: float) -> float:
    return 1000 * (row.run.percentile(q) - direct.percentile(q))


def _ratio(value: float | None, reference: float | None) -> str:
    if value is None or reference is None or reference <= 0 or value < 0:
        return "–"
    return f"{value / reference:.2f}"


def _cpu(run: Run) -> float | None:
    return run.cpu_ms_per_request


def _system_table(direct: Mapping[int, Run], rows: list[Row]) -> list[str]:
    by_key = {(r.system, r.concurrency): r for r in rows}
    lines = [
        "| system | c | added p50 | added p95 | added p99 | req/s | CPU ms/req "
        "| p50 ÷ hit | p50 ÷ miss | req/s ÷ hit | req/s ÷ miss | CPU ÷ hit | CPU ÷ miss |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c, run in sorted(direct.items()):
        lines.append(
            f"| direct to upstream (p50 {1000 * run.percentile(50):.2f} ms) | {c} | 0 | 0 | 0 "
            f"| {run.rps:.0f} | – | – | – | – | – | – | – |"
        )
    for row in sorted(rows, key=lambda r: (r.concurrency, r.system != HIT, r.system != MISS)):
        base = direct[row.concurrency]
        hit, miss = by_key.get((HIT, row.concurrency)), by_key.get((MISS, row.concurrency))
        added = [_added(row, base, q) for q in (50, 95, 99)]
        cpu = _cpu(row.run)
        cells = [
            row.system,
            str(row.concurrency),
            *(f"{value:+.2f}" for value in added),
            f"{row.run.rps:.0f}",
            "–" if cpu is None else f"{cpu:.2f}",
        ]
        for ref in (hit, miss):
            cells.append(_ratio(added[0], None if ref is None else _added(ref, base, 50)))
        for ref in (hit, miss):
            cells.append(_ratio(row.run.rps, None if ref is None else ref.run.rps))
        for ref in (hit, miss):
            cells.append(_ratio(cpu, None if ref is None else _cpu(ref.run)))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _encoder_table(encoders: list[EncoderRun], rows: list[Row]) -> list[str]:
    miss = {r.concurrency: r.run.rps for r in rows if r.system == MISS}
    top = max(miss.values()) if miss else None
    lines = [
        "| encoder | threads | batch | ms per pass | texts/s | DARS miss best req/s ÷ this |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    if top is not None and encoders:
        best = max(encoders, key=lambda e: e.texts_per_s)
        same = [e for e in encoders if e.backend == "onnx"]  # the default backend on a CPU
        best_default = max(same, key=lambda e: e.texts_per_s) if same else best
        lines[:0] = [
            f"DARS Router's best cache-miss throughput, {top:.0f} req/s, is "
            f"{top / best_default.texts_per_s:.0%} of its own (onnx) encoder's best bare "
            f"throughput ({best_default.texts_per_s:.0f} texts/s, {best_default.threads} "
            f"thread(s), batch {best_default.batch}) and {top / best.texts_per_s:.0%} of the "
            f"fastest row ({best.backend}, {best.texts_per_s:.0f} texts/s).",
            "",
        ]
    for e in encoders:
        lines.append(
            f"| {e.backend} | {e.threads} | {e.batch} | {e.ms_per_pass:.1f} | {e.texts_per_s:.0f} "
            f"| {_ratio(top, e.texts_per_s)} |"
        )
    return lines


def render(
    direct: Mapping[int, Run],
    rows: list[Row],
    encoders: list[EncoderRun],
    failures: Mapping[str, str],
    versions: Mapping[str, str],
    context: Mapping[str, str],
) -> str:
    """The whole report: context, the systems table, the encoder table, failures."""
    out = ["## Side by side: `python -m bench.peers`", ""]
    out += [f"- **{key}**: {value}" for key, value in context.items()]
    out += [f"- **{name}**: version {v}" for name, v in versions.items()]
    out += [
        "",
        "Latencies in ms, added = system minus direct at the same percentile; CPU is the "
        "server's process tree (user + system) per timed request; `÷ hit` / `÷ miss`: ratio to "
        "DARS Router's cache-hit / cache-miss row at the same concurrency.",
        "",
        *_system_table(direct, rows),
        "",
        "Bare encoder (no service), the same queries; the last column is DARS Router's best "
        "cache-miss throughput as a share of this encoder's:",
        "",
        *_encoder_table(encoders, rows),
    ]
    if failures:
        out += ["", "Not measured:", ""]
        out += [f"- {name}: {reason}" for name, reason in failures.items()]
    return "\n".join(out) + "\n"
