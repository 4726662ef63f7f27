"""DARS Router side by side with its peers and the bare encoder, in one run on one machine.

Systems, each a server process of its own in front of one fake OpenAI upstream on loopback:
direct to the upstream; DARS Router with an embedding-cache hit and with a miss (the default
encoder backend, and torch for comparison); the LiteLLM proxy (no routing); RouteLLM's server
with its ``random`` router. For concurrency 1, 16 and 64 it measures p50/p95/p99 added latency
(system minus direct, per percentile), requests per second and the server's CPU per request
(its process tree, from ``/proc``), and each figure as a ratio to DARS Router. Before that it
times the bare encoder (torch, ONNX Runtime fp32 and int8) at batch 1, 32 and 256.

Prints one markdown report and writes it into ``bench/RESULTS.md`` between the markers.
Peers live in their own venvs under ``.cache/bench-venvs`` (``--install`` creates them); a
peer that fails to install or start is reported with the reason. Loopback only, bounded.

Run from the repository root::

    python -m bench.peers [--install] [--requests 300] [--threads N]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from app.main import bundled_router_path
from bench._cpu import tree_cpu_seconds
from bench._encoders import EncoderRun, measure_encoders
from bench._harness import Run, Server, load, router_process, upstream_process
from bench._peers import PEERS, Endpoint, Peer, PeerUnavailable, install, peer_server, version
from bench._report import Row, render

__all__ = ["main"]

CONCURRENCY = (1, 16, 64)
MAX_REQUESTS = 2000
RESULTS = Path(__file__).with_name("RESULTS.md")
BEGIN, END = "<!-- bench.peers: begin -->", "<!-- bench.peers: end -->"
DARS_HIT, DARS_MISS = "DARS Router, cache hit", "DARS Router, cache miss"


@dataclass
class Measurements:
    """Everything one run measured, and what could not be measured, with the reason."""

    direct: dict[int, Run] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    encoders: list[EncoderRun] = field(default_factory=list)


async def _measure(
    url: str,
    model: str,
    server: Server | None,
    *,
    requests: int,
    concurrency: int,
    unique: bool,
    headers: dict[str, str] | None = None,
) -> Run:
    probe = None if server is None else (lambda: tree_cpu_seconds(server.process.pid))
    return await load(
        f"{url}/v1/chat/completions" if server else url,
        requests=max(requests, concurrency),
        concurrency=concurrency,
        unique=unique,
        model=model,
        headers=headers,
        cpu_seconds=probe,
    )


async def _dars(
    server: Server, m: Measurements, requests: int, *, miss_label: str, hit: bool
) -> None:
    await load(f"{server.url}/v1/chat/completions", requests=50, concurrency=4, unique=False)
    for c in CONCURRENCY:
        if hit:
            run = await _measure(
                server.url, "router", server, requests=requests, concurrency=c, unique=False
            )
            m.rows.append(Row(DARS_HIT, c, run))
        run = await _measure(
            server.url, "router", server, requests=requests, concurrency=c, unique=True
        )
        m.rows.append(Row(miss_label, c, run))


async def _peer(endpoint: Endpoint, label: str, m: Measurements, requests: int) -> None:
    server, model, headers = endpoint.server, endpoint.model, endpoint.headers
    url = f"{server.url}/v1/chat/completions"
    await load(url, requests=50, concurrency=4, unique=False, model=model, headers=headers)
    for c in CONCURRENCY:
        run = await _measure(
            server.url,
            model,
            server,
            requests=requests,
            concurrency=c,
            unique=True,
            headers=headers,
        )
        m.rows.append(Row(label, c, run))


def _run_systems(m: Measurements, args: argparse.Namespace, workdir: Path) -> None:
    router = args.router or bundled_router_path()
    if router is None:
        raise SystemExit("no router file: pass --router (the bundled default.onnx is missing)")
    with upstream_process() as upstream:
        for c in CONCURRENCY:
            direct_url = f"{upstream}/chat/completions"
            m.direct[c] = asyncio.run(
                _measure(
                    direct_url, "edge", None, requests=args.requests, concurrency=c, unique=True
                )
            )
        backends = [("auto", f"{DARS_MISS} (default encoder)", True)]
        if not args.no_torch:
            backends.append(("torch", f"{DARS_MISS} (torch encoder)", False))
        for backend, label, hit in backends:
            env = {"DARS_EMBEDDING_BACKEND": backend}
            log = workdir / f"dars-{backend}.log"
            with router_process(router, upstream, args.threads, extra_env=env, log=log) as server:
                asyncio.run(_dars(server, m, args.requests, miss_label=label, hit=hit))
        for peer in PEERS:
            _run_peer(peer, upstream, m, args, workdir)


def _run_peer(
    peer: Peer, upstream: str, m: Measurements, args: argparse.Namespace, workdir: Path
) -> None:
    try:
        if args.install:
            install(peer)
        m.versions[peer.label] = version(peer)
        with peer_server(peer, upstream, workdir) as endpoint:
            label = f"{peer.label} {m.versions[peer.label]}"
            asyncio.run(_peer(endpoint, label, m, args.requests))
    except (PeerUnavailable, RuntimeError, OSError) as exc:
        m.failures[peer.label] = str(exc)
        print(f"{peer.label}: {exc}", file=sys.stderr)
    except Exception as exc:  # e.g. it answered errors under load: report it, go on
        m.failures[peer.label] = f"failed during the run: {type(exc).__name__}: {exc}"
        print(f"{peer.label}: {exc}", file=sys.stderr)


def _load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _commit() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head.stdout.strip() + (" + uncommitted changes" if dirty.stdout.strip() else "")


def _write_results(report: str) -> None:
    block = f"{BEGIN}\n{report.rstrip()}\n{END}"
    if RESULTS.is_file():
        text = RESULTS.read_text()
        if BEGIN in text and END in text:
            before, rest = text.split(BEGIN, 1)
            RESULTS.write_text(before + block + rest.split(END, 1)[1])
            return
        RESULTS.write_text(text.rstrip() + "\n\n" + block + "\n")
        return
    RESULTS.write_text(f"# Benchmark results\n\n{block}\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="timed requests per cell")
    parser.add_argument(
        "--threads",
        type=int,
        help="encoder/router threads of DARS Router (default: its own defaults) and of the bare "
        "encoder (default: 1 and all cores)",
    )
    parser.add_argument("--router", type=Path, help="router .onnx (default: the bundled one)")
    parser.add_argument("--install", action="store_true", help="pip-install missing peers first")
    parser.add_argument("--no-torch", action="store_true", help="skip DARS with the torch encoder")
    parser.add_argument("--no-write", action="store_true", help=f"print only; leave {RESULTS.name}")
    args = parser.parse_args(argv)
    if not 1 <= args.requests <= MAX_REQUESTS:
        parser.error(f"--requests must be within [1, {MAX_REQUESTS}]")

    started = dt.datetime.now(dt.UTC)
    load_before = _load_average()
    m = Measurements()
    cores = os.cpu_count() or 1
    bare_threads = (args.threads,) if args.threads else tuple(sorted({1, cores}))
    m.encoders, encoder_failures = measure_encoders(("torch", "onnx", "onnx-int8"), bare_threads)
    m.failures.update({f"bare encoder, {k}": v for k, v in encoder_failures.items()})
    with tempfile.TemporaryDirectory() as workdir:
        _run_systems(m, args, Path(workdir))
    minutes = (dt.datetime.now(dt.UTC) - started).total_seconds() / 60
    context = {
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python -m bench.peers " + " ".join(argv if argv is not None else sys.argv[1:]),
        "cpu": f"{_cpu_model()}, {os.cpu_count()} logical CPUs, no GPU used",
        "commit": _commit(),
        "load average": f"{load_before} before, {_load_average()} after (1, 5, 15 min)",
        "duration": f"{minutes:.1f} min",
        "requests": f"{args.requests} timed per cell (at least the concurrency)",
        "threads": (
            f"{args.threads} (DARS Router and bare encoder)"
            if args.threads
            else "DARS Router's defaults (ONNX encoder cores - 1, torch all cores, small router 1);"
            f" bare encoder {' and '.join(map(str, bare_threads))}"
        ),
    }
    report = render(m.direct, m.rows, m.encoders, m.failures, m.versions, context)
    print(report)
    if not args.no_write:
        _write_results(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
