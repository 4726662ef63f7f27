"""The benchmark's pure parts: ratios in the report, CPU from /proc, py-spy's stacks summed."""

from __future__ import annotations

import os

import numpy as np
import pytest

from bench._cpu import tree_cpu_seconds
from bench._encoders import EncoderRun
from bench._harness import Run
from bench._report import HIT, MISS, Row, render
from bench.profile_hit import top_functions


def run(latency_ms: float, *, rps: float = 100.0, cpu_ms: float | None = None) -> Run:
    latencies = np.full(10, latency_ms / 1000)
    cpu = None if cpu_ms is None else cpu_ms * 10 / 1000
    return Run(latencies, wall_s=10 / rps, cpu_s=cpu)


def table_row(report: str, system: str, concurrency: int) -> list[str]:
    for line in report.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] == system and cells[1] == str(concurrency):
            return cells
    raise AssertionError(f"no row {system} at {concurrency}")


def test_ratios_are_to_dars_at_the_same_concurrency() -> None:
    direct = {1: run(1.0, rps=1000)}
    rows = [
        Row(HIT, 1, run(3.0, rps=400, cpu_ms=1.0)),
        Row(MISS, 1, run(11.0, rps=80, cpu_ms=5.0)),
        Row("peer", 1, run(21.0, rps=50, cpu_ms=10.0)),
    ]
    encoders = [
        EncoderRun("onnx", 1, 32, 40.0, 800.0),
        EncoderRun("onnx-int8", 1, 32, 20.0, 1600.0),
    ]
    report = render(direct, rows, encoders, {"broken peer": "did not start: exit 3"}, {}, {})
    peer = table_row(report, "peer", 1)
    assert peer[2:7] == ["+20.00", "+20.00", "+20.00", "50", "10.00"]
    # added p50 20 vs 2 (hit) and 10 (miss); req/s 50 vs 400 and 80; CPU 10 vs 1 and 5
    assert peer[7:] == ["10.00", "2.00", "0.12", "0.62", "10.00", "2.00"]
    assert table_row(report, HIT, 1)[7] == "1.00"
    assert "- broken peer: did not start: exit 3" in report
    assert "80 req/s, is 10% of its own (onnx) encoder's best" in report
    assert "5% of the fastest row (onnx-int8" in report


def test_a_missing_reference_gives_no_ratio() -> None:
    report = render({1: run(1.0)}, [Row("peer", 1, run(2.0))], [], {}, {}, {})
    assert table_row(report, "peer", 1)[6:] == ["–"] * 7


def test_cpu_of_this_process_is_read_from_proc() -> None:
    if not os.path.isdir("/proc/self"):
        pytest.skip("needs /proc")
    before = tree_cpu_seconds(os.getpid())
    sum(i * i for i in range(2_000_000))  # some CPU; the clock ticks are coarse
    assert tree_cpu_seconds(os.getpid()) >= before > 0
    assert tree_cpu_seconds(2**22 + 12345) == 0.0  # no such process


def test_top_functions_sums_py_spy_stacks() -> None:
    collapsed = "\n".join(
        [
            "main (app/cli.py:1);handle (site-packages/httpcore/pool.py:9) 3",
            "main (app/cli.py:1);score (/work/main/app/scoring.py:5) 1",
            "not a stack line",
        ]
    )
    inclusive, own = top_functions(collapsed, 5)
    assert inclusive[0] == ("main (app/cli.py)", 1.0)
    assert own == [("handle (httpcore/pool.py)", 0.75), ("score (app/scoring.py)", 0.25)]
