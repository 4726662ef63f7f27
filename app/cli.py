"""``dars-router``: ``serve`` runs the service; ``route "<text>"`` prints a query's score and route.

Configuration comes from ``DARS_*`` variables (and ``.env``), as for the service. A missing
router model is an operator error with a known fix, so it is a message and exit code 2, never a
traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from contextlib import AsyncExitStack

from app.errors import DarsError
from app.scoring import RouterLoadError
from app.settings import Settings, get_settings

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
    route = commands.add_parser("route", help="print the router's score and decision for a text")
    route.add_argument("text", help="the query text")
    route.add_argument(
        "--threshold", type=float, help="threshold to decide with (default: the server's)"
    )
    return parser


def _serve(settings: Settings, host: str | None, port: int | None) -> int:
    import uvicorn

    from app.main import create_app, router_model_path

    router_model_path(settings)  # fail here, with the how-to, before loading anything
    uvicorn.run(
        create_app(settings),
        host=host or settings.host,
        port=settings.port if port is None else port,
        log_level=settings.log_level,
    )
    return 0


async def _route(settings: Settings, text: str, threshold: float | None) -> str:
    """The service's own decision path (encoder, cache, router, threshold), without upstreams."""
    from app.api.chat import route_headers, route_request
    from app.main import build_services
    from app.protocol import ChatCompletionRequest, ChatMessage
    from app.query import query_text

    request = ChatCompletionRequest(
        model="router", messages=[ChatMessage(role="user", content=text)]
    )
    query_text(request, max_chars=settings.query_max_chars)  # reject no text before loading
    async with AsyncExitStack() as stack:
        services = await build_services(settings, stack)
        if threshold is not None:
            services.threshold.set(threshold)
        decision = (await route_request(request, services, record=False)).decision
    fields = {
        name.removeprefix("x-dars-"): value for name, value in route_headers(decision).items()
    }
    fields["model"] = settings.upstream(decision.route).model
    return " ".join(f"{name}={value}" for name, value in fields.items())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``dars-router``; returns the process exit code."""
    args = _parser().parse_args(argv)
    try:
        settings = get_settings()
        if args.command == "serve":
            return _serve(settings, args.host, args.port)
        print(asyncio.run(_route(settings, args.text, args.threshold)))
        return 0
    except DarsError as exc:
        print(f"dars-router: {exc.message}", file=sys.stderr)
        return EXIT_CONFIG
    except RouterLoadError as exc:
        print(f"dars-router: unusable router model: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except ValueError as exc:  # invalid DARS_* settings (pydantic's ValidationError)
        print(f"dars-router: invalid settings: {exc}", file=sys.stderr)
        return EXIT_CONFIG


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
