"""``dars-router``: ``serve`` runs the service; ``route "<text>"`` prints a query's score and route.

Configuration comes from ``DARS_*`` variables (and ``.env``), as for the service. With no
upstream configured, ``serve`` starts the local models first (``app.local_models``) and stops
them when it exits. A missing router model, missing local model files or half-configured
upstreams are operator errors with a known fix, so each is a message and exit code 2, never a
traceback. ``serve --workers N`` (``DARS_WORKERS``) runs N uvicorn workers (``app/workers.py``):
the local models start once, here, and reach the workers as ``DARS_*`` variables.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Sequence
from contextlib import AsyncExitStack, ExitStack, contextmanager
from types import FrameType
from typing import TYPE_CHECKING, Any

from app import local_models
from app.errors import DarsError
from app.scoring import RouterLoadError
from app.settings import MAX_WORKERS, Settings, get_settings
from app.workers import (
    MULTIPROC_ENV,
    WorkerSetupError,
    multiprocess_dir,
    run_workers,
    settings_env,
    thread_env,
    worker_problem,
)

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

__all__ = ["EXIT_CONFIG", "main"]

EXIT_CONFIG = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dars-router", description="OpenAI-compatible router between an edge and a cloud LLM."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the HTTP service (settings: DARS_* variables)")
    serve.add_argument("--host", help="override DARS_HOST")
    serve.add_argument("--port", type=int, help="override DARS_PORT")
    serve.add_argument(
        "--workers", type=_worker_count, help="override DARS_WORKERS (> 1 needs DARS_REDIS_URL)"
    )
    route = commands.add_parser("route", help="print the router's score and decision for a text")
    route.add_argument("text", help="the query text")
    route.add_argument(
        "--threshold", type=float, help="threshold to decide with (default: the server's)"
    )
    return parser


def _worker_count(text: str) -> int:
    """``--workers``, within ``DARS_WORKERS``' bounds (the override skips settings validation)."""
    value = int(text)
    if not 1 <= value <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"must be within [1, {MAX_WORKERS}]")
    return value


class _Stopped(Exception):
    """SIGINT/SIGTERM reached ``serve`` (internal): unwind so that the local models stop."""


def _raise_stopped(signum: int, frame: FrameType | None) -> None:
    raise _Stopped(signum)


@contextmanager
def _environ(updates: Mapping[str, str]) -> Iterator[None]:
    """``updates`` in ``os.environ`` (which spawned workers inherit) for the block's duration."""
    previous = {name: os.environ.get(name) for name in updates}
    os.environ.update(updates)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _worker_environment(stack: ExitStack, configured: Settings, settings: Settings) -> None:
    """Prepare what N workers read at start: a fresh metrics directory (before they import
    prometheus-client), the local models' URLs, and cores / N intra-op threads each."""
    directory = stack.enter_context(multiprocess_dir(os.environ.get(MULTIPROC_ENV)))
    env = {
        **settings_env(configured, settings),
        **thread_env(configured, settings.workers),
        "DARS_WORKERS": str(settings.workers),
        MULTIPROC_ENV: str(directory),
    }
    stack.enter_context(_environ(env))


def _serve(settings: Settings, host: str | None, port: int | None, workers: int | None) -> int:
    import uvicorn

    from app.main import create_app, router_model_path

    if workers is not None:
        settings = settings.model_copy(update={"workers": workers})
    problem = worker_problem(
        settings.workers, redis=settings.redis_url is not None, multiproc_dir=True
    )
    if problem is not None:
        raise WorkerSetupError(problem)
    router_model_path(settings)  # fail here, with the how-to, before loading anything
    # uvicorn drains on SIGINT/SIGTERM, restores the handlers it found, then raises the signal
    # again; with the default handlers SIGTERM would kill this process before it stops the
    # local models, so those handlers unwind the stack instead (also during their start-up).
    # With N workers uvicorn's supervisor takes the signals over, stops its workers and
    # returns, and the stack unwinds the same way.
    previous = {sig: signal.signal(sig, _raise_stopped) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with ExitStack() as stack:
            configured = settings
            if local_models.wants_local_models(settings):
                cache = local_models.cache_dir()
                running = stack.enter_context(
                    local_models.start_local_models(settings, cache / "models", cache / "run")
                )
                settings = local_models.settings_for(settings, running)
                print(local_models.describe(running), flush=True)
            if settings.workers > 1:
                _worker_environment(stack, configured, settings)
            elif os.environ.get(MULTIPROC_ENV):  # one worker in multiprocess mode: wipe it too
                stack.enter_context(multiprocess_dir(os.environ[MULTIPROC_ENV]))
            options: dict[str, Any] = {
                "host": host or settings.host,
                "port": settings.port if port is None else port,
                "log_level": settings.log_level,
                # app.request_context logs one access line per request, with its request id
                "access_log": False,
            }
            if settings.workers == 1:
                # One process, whatever WEB_CONCURRENCY says (platforms set it for every app):
                # uvicorn would take it as a worker count and refuse an app object, and the
                # app's own check (app.workers.check_workers) would count it too.
                stack.enter_context(_environ({"WEB_CONCURRENCY": "1"}))
                uvicorn.run(create_app(settings), workers=1, **options)
            else:  # each worker builds the app from the environment (uvicorn needs a factory)
                run_workers("app.main:create_app", settings.workers, **options)
    except _Stopped:
        pass  # stopped on request, cleanly
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


async def _route(settings: Settings, text: str, threshold: float | None) -> str:
    """The service's own decision path (encoder, cache, router, threshold), without upstreams."""
    from app.api.chat import route_headers, route_request
    from app.main import build_services
    from app.protocol import ChatCompletionRequest, ChatMessage
    from app.query import query_policy, query_text

    request = ChatCompletionRequest(
        model="router", messages=[ChatMessage(role="user", content=text)]
    )
    query_text(request, query_policy(settings, {}))  # reject no text before loading
    # Nothing is forwarded, but the shared build path makes upstream clients: unset URLs get a
    # reserved name that never resolves (RFC 6761 .invalid), so no default reaches anyone.
    settings = settings.model_copy(
        update={
            f"{name}_base_url": f"http://{name}-not-configured.invalid/v1"
            for name in ("edge", "cloud")
            if getattr(settings, f"{name}_base_url") is None
        }
    )
    async with AsyncExitStack() as stack:
        services = await build_services(settings, stack)
        if threshold is not None:
            services.threshold.set(threshold)
        decision = (await route_request(request, services, record=False)).decision
        model = services.upstreams[decision.route].model
    fields = {
        name.removeprefix("x-dars-"): value for name, value in route_headers(decision).items()
    }
    fields["model"] = model
    return " ".join(f"{name}={value}" for name, value in fields.items())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``dars-router``; returns the process exit code."""
    args = _parser().parse_args(argv)
    try:
        settings = get_settings()
        if args.command == "serve":
            return _serve(settings, args.host, args.port, args.workers)
        print(asyncio.run(_route(settings, args.text, args.threshold)))
        return 0
    except DarsError as exc:
        print(f"dars-router: {exc.message}", file=sys.stderr)
        return EXIT_CONFIG
    except RouterLoadError as exc:
        print(f"dars-router: unusable router model: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except (local_models.LocalModelsError, WorkerSetupError) as exc:
        print(f"dars-router: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except ValueError as exc:  # invalid DARS_* settings (pydantic's ValidationError)
        print(f"dars-router: invalid settings: {exc}", file=sys.stderr)
        return EXIT_CONFIG


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
