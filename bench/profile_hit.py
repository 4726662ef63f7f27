"""Where a cache hit spends the router's CPU: py-spy samples ``dars-router serve`` under load.

Starts the fake upstream and the router (bundled router, default encoder backend), sends one
repeated query (every request an embedding-cache hit) at ``--concurrency`` while py-spy
records the router process, then prints the functions with the largest share of samples,
inclusive and self. py-spy is not a project dependency: pass its path (``pip install py-spy``
into any venv; ``make bench-peers`` puts one in ``.cache/bench-venvs/tools``).

Run from the repository root::

    python -m bench.profile_hit --py-spy .cache/bench-venvs/tools/bin/py-spy [--requests 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import httpx

from app.main import bundled_router_path
from bench._harness import load, router_process, upstream_process

__all__ = ["main", "top_functions"]


def top_functions(
    collapsed: str, count: int
) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """(inclusive, self) shares of samples per function from py-spy's ``raw`` (collapsed) output."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, samples = line.rpartition(" ")
        if not stack or not samples.isdigit():
            continue
        n = int(samples)
        total += n
        frames = [_short(frame) for frame in stack.split(";")]
        for frame in set(frames):
            inclusive[frame] += n
        own[frames[-1]] += n
    if total == 0:
        return [], []

    def shares(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(name, n / total) for name, n in counter.most_common(count)]

    return shares(inclusive), shares(own)


def _short(frame: str) -> str:
    """``function (path/to/site-packages/pkg/mod.py:12)`` -> ``function (pkg/mod.py)``."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/work/main/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{name} ({path})" if path else name


def _batch_sizes(url: str) -> str:
    """Forward passes and mean texts per pass, from ``dars_embedding_batch_size``: whether the
    batcher formed full batches is the first question about cache-miss throughput."""
    samples: dict[str, float] = {}
    for line in httpx.get(f"{url}/metrics", timeout=10.0, trust_env=False).text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("dars_embedding_batch_size_count", "dars_embedding_batch_size_sum"):
            samples[name] = float(value)
    count = samples.get("dars_embedding_batch_size_count", 0.0)
    total = samples.get("dars_embedding_batch_size_sum", 0.0)
    return f"{count:.0f}, {total / count if count else 0.0:.1f} texts each"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--py-spy", required=True, help="path of the py-spy executable")
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--miss", action="store_true", help="unique queries: cache misses")
    parser.add_argument("--backend", default="auto", help="DARS_EMBEDDING_BACKEND")
    parser.add_argument("--raw", type=Path, help="also keep py-spy's collapsed stacks here")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="DARS_X=VALUE",
        help="extra router setting, e.g. DARS_EMBEDDING_PASSES=1 (repeatable)",
    )
    args = parser.parse_args(argv)
    router = bundled_router_path()
    if router is None:
        raise SystemExit("no bundled router")
    with tempfile.TemporaryDirectory() as folder, upstream_process() as upstream:
        output = Path(folder) / "profile.txt"
        env = {"DARS_EMBEDDING_BACKEND": args.backend}
        env.update(item.split("=", 1) for item in args.env)
        with router_process(router, upstream, None, extra_env=env) as server:
            url = f"{server.url}/v1/chat/completions"
            asyncio.run(load(url, requests=200, concurrency=8, unique=False))  # warm the cache
            spy = subprocess.Popen(
                [args.py_spy, "record", "--pid", str(server.process.pid), "--format", "raw",
                 "--rate", "250", "--nonblocking", "--output", str(output)],
                stdout=subprocess.DEVNULL,
            )  # fmt: skip
            run = asyncio.run(
                load(url, requests=args.requests, concurrency=args.concurrency, unique=args.miss)
            )
            spy.send_signal(2)  # SIGINT: py-spy writes its output and exits
            spy.wait(timeout=60)
            batches = _batch_sizes(server.url)
        collapsed = output.read_text()
        if args.raw is not None:
            args.raw.write_text(collapsed)
        inclusive, own = top_functions(collapsed, args.top)
    what = "cache misses" if args.miss else "cache hits"
    print(f"{args.requests} {what} at concurrency {args.concurrency}: {run.rps:.0f} req/s")
    print(f"embedding passes since start (warm-up included): {batches}\n")
    for title, rows in (("inclusive", inclusive), ("self", own)):
        print(f"| {title} share | function |\n|---:|---|")
        print("\n".join(f"| {share:.1%} | `{name}` |" for name, share in rows) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
