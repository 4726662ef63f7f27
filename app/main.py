"""The FastAPI application: ``create_app()`` registers routes and handlers; the lifespan builds
the services (encoder, cache, router model, threshold, upstream clients) and closes them.

Nothing happens at import. Every error a client can see is an OpenAI error body: the service's
own errors, request validation (400), malformed JSON (400), oversized bodies (413), unknown
routes (404) and unexpected failures (500); every response carries ``x-request-id``
(``app.request_context``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api import api_routers
from app.cache import build_cache
from app.cascade import build_cascade
from app.deps import Services
from app.embedding import QueryEmbedder, build_embedder
from app.errors import DarsError, InvalidRequest, PayloadTooLarge, RouterUnavailable
from app.handlers import install_handlers
from app.live.loop import LiveLoop
from app.logs import configure_logging
from app.metrics import Metrics
from app.openapi import DarsAPI
from app.policy import ThresholdState
from app.request_context import RequestContext, error_response
from app.routing import RouterParts, check_router_fits
from app.scoring import Scorer, load_router_model
from app.settings import Settings, get_settings
from app.shared import CASCADE_PREFIX, build_shared_state
from app.shared_router import build_router_sync
from app.upstream import Upstreams
from app.upstreams_file import configured_upstreams
from app.utility import UtilityRouter
from app.workers import check_workers

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = [
    "NO_ROUTER_MESSAGE",
    "BodySizeLimit",
    "bundled_router_path",
    "create_app",
    "router_model_path",
]

logger = logging.getLogger(__name__)

NO_ROUTER_MESSAGE = (
    "No router model is configured and no bundled router was found "
    "(router_models/pretrained/default.onnx). Train one with `dars-train` and point "
    "DARS_ROUTER_MODEL at the .onnx file it writes, e.g. DARS_ROUTER_MODEL=/path/to/router.onnx."
)


def bundled_router_path() -> Path | None:
    """The router shipped inside the ``router_models`` package, if this install has one."""
    resource = resources.files("router_models").joinpath("pretrained", "default.onnx")
    # Packages are installed as plain directories (no zip imports), so the resource is a file.
    return Path(str(resource)) if resource.is_file() else None


def router_model_path(settings: Settings) -> Path:
    """``DARS_ROUTER_MODEL``, else the bundled router; else ``RouterUnavailable`` with how-to."""
    if settings.router_model is not None:
        if not settings.router_model.is_file():
            raise RouterUnavailable(
                f"Router model file not found: {settings.router_model} (DARS_ROUTER_MODEL)."
            )
        return settings.router_model
    bundled = bundled_router_path()
    if bundled is None:
        raise RouterUnavailable(NO_ROUTER_MESSAGE)
    return bundled


# --- services


async def build_services(
    settings: Settings, stack: AsyncExitStack, *, encoder: SentenceTransformer | None = None
) -> Services:
    """Build every service, registering each one's ``aclose`` on ``stack`` (closed in reverse)."""
    check_workers(settings)  # one of several workers: Redis and a metrics directory, or refuse
    path = router_model_path(settings)  # before the slow encoder load: fail fast
    upstream_config = configured_upstreams(settings)  # a bad upstreams file fails fast too
    metrics = Metrics()
    metrics.initialise_upstreams(upstream_config.failover)
    metrics.set_upstream_models({spec.name: spec.model for spec in upstream_config.upstreams})
    embedder = await asyncio.to_thread(build_embedder, settings, metrics, encoder=encoder)
    await embedder.start()
    stack.push_async_callback(embedder.aclose)
    model = await asyncio.to_thread(
        load_router_model,
        path,
        expected_embedding_model=embedder.model_id,
        expected_dim=embedder.dim,
        providers=settings.onnx_providers,
        intra_op_threads=settings.onnx_threads,
    )
    gated_rung = upstream_config.names[0] if settings.cascade_gate is not None else None
    check_router_fits(model, upstream_config, gated_rung=gated_rung)
    scorer = Scorer(
        model,
        metrics=metrics,
        providers=settings.onnx_providers,
        intra_op_threads=settings.onnx_threads,
        accept=lambda loaded: check_router_fits(loaded, upstream_config, gated_rung=gated_rung),
    )
    cache = build_cache(settings, metrics)
    stack.push_async_callback(cache.aclose)
    upstreams = Upstreams.from_config(upstream_config, settings, metrics)
    stack.push_async_callback(upstreams.aclose)
    utility = UtilityRouter(upstream_config, upstreams, window=settings.calibration_window)
    logger.info(
        "router %s on %s, encoder %s on %s (%s), cache %s",
        model.path,
        model.provider,
        embedder.model_id,
        embedder.device,
        embedder.backend,
        cache.backend,
    )
    threshold = ThresholdState.from_settings(
        settings, default_threshold=model.default_threshold, metrics=metrics
    )
    shared = build_shared_state(settings, threshold)
    await shared.start()  # takes the replicas' shared threshold, if there is one
    stack.push_async_callback(shared.aclose)
    query_embedder = QueryEmbedder(embedder, cache)
    cascade = build_cascade(
        settings,
        upstreams=upstreams,
        embedder=embedder,
        query_embedder=query_embedder,
        router=RouterParts(scorer, threshold, utility),
        metrics=metrics,
    )
    # The cascade's entropy threshold and window, shared like the router's (own keys).
    cascade.shared = build_shared_state(settings, cascade.threshold, prefix=CASCADE_PREFIX)
    await cascade.shared.start()
    stack.push_async_callback(cascade.shared.aclose)
    router_sync = build_router_sync(settings, metrics)
    stack.push_async_callback(router_sync.aclose)
    services = Services(
        settings=settings,
        metrics=metrics,
        embedder=embedder,
        cache=cache,
        query_embedder=query_embedder,
        scorer=scorer,
        threshold=threshold,
        upstreams=upstreams,
        shared=shared,
        cascade=cascade,
        live=await LiveLoop.build(settings, metrics.live, stack),
        utility=utility,
        router_sync=router_sync,
    )
    # Takes the replicas' shared router, if there is one and it is not this file (after the
    # shared threshold, so that the reload rule applies to the threshold it will serve with).
    await router_sync.start(lambda: scorer.model, services.follow_router)
    return services


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with AsyncExitStack() as stack:
        app.state.services = await build_services(
            app.state.settings, stack, encoder=app.state.encoder
        )
        try:
            yield
        finally:
            app.state.services = None


# --- request body limit


class BodySizeLimit:
    """ASGI middleware: 413 for bodies over ``max_bytes``, by ``Content-Length`` or as read.

    The body is read here (FastAPI reads it whole anyway) and replayed to the app; later
    ``receive`` calls go to the server, so disconnects still reach streaming responses.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                error: DarsError = InvalidRequest(
                    "Invalid Content-Length header.", code="invalid_content_length"
                )
                await error_response(error)(scope, receive, send)
                return
            if length > self.max_bytes:
                await error_response(self._too_large())(scope, receive, send)
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left before sending its body
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await error_response(self._too_large())(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(b"".join(chunks), receive), send)

    def _too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(f"Request body exceeds {self.max_bytes} bytes.")


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


# --- the app


def create_app(
    settings: Settings | None = None, *, encoder: SentenceTransformer | None = None
) -> FastAPI:
    """The service as an ASGI app; services are built when it starts (lifespan).

    Also the factory each worker of ``dars-router serve --workers N`` calls (``factory=True``):
    with no arguments it reads its settings from the environment the parent prepared.

    ``encoder``: an already loaded all-MiniLM-L6-v2 to use instead of loading the one the
    settings name (tests share one across apps).
    """
    settings = settings if settings is not None else get_settings()
    configure_logging(settings.log_level)
    app = DarsAPI(
        title="DARS Router",
        summary="OpenAI-compatible router between an edge and a cloud LLM.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.encoder = encoder
    app.state.services = None
    for router in api_routers():
        app.include_router(router)
    install_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestContext)  # outermost: sees every response, 413s included
    return app
