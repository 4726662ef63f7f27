"""Router scoring: load an ONNX router file, check it against the contract, score embeddings.

A router file is checked completely before it serves (names, shapes, metadata, one dummy
batch), so that a bad file fails at start-up or at reload, never on a live request. Reload
swaps the model atomically; a file that fails the checks leaves the old model serving.

The contract (input/output names, metadata keys) is :mod:`router_models.contract`, and so is the
validator: names, shapes and the dry run are checked by ``check_router_signature`` and
``check_dry_run``, the trainer's own. A file with ``quality`` outputs (contract v2, K models) is
checked with its metadata by the contract too; a score-only file keeps the service's leniency
for the metadata it can do without (calibration, models, label scheme, router kind), so that
older files still load. A router may take the optional second input ``query_length``
(characters of the text the service embedded); :class:`RouterModel` records whether it does
and feeds it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnxruntime as ort

from app.errors import RouterUnavailable
from app.utility import DEFAULT_TRADEOFF
from router_models.contract import (
    DEFAULT_QUERY_MAX_CHARS,
    INPUT_NAME,
    LENGTH_INPUT_NAME,
    META_CALIBRATION,
    META_DEFAULT_THRESHOLD,
    META_EMBEDDING_DIM,
    META_EMBEDDING_MODEL,
    META_LABEL_SCHEME,
    META_MODELS,
    META_QUALITY_CALIBRATION,
    META_ROUTER,
    OUTPUT_NAME,
    QUALITY_OUTPUT_NAME,
    Calibration,
    ContractError,
    RouterSignature,
    check_dry_run,
    check_router_signature,
    parse_models,
    parse_quality_calibration,
    tensor_specs_from_session,
)
from router_models.live.state import file_sha256

if TYPE_CHECKING:
    from app.metrics import Metrics

__all__ = [
    "INLINE_MAX_BYTES",
    "RouterLoadError",
    "RouterModel",
    "Scorer",
    "load_router_model",
    "resolve_providers",
]

logger = logging.getLogger(__name__)

CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"
_PROVIDER_ALIASES = {
    "cpu": CPU_PROVIDER,
    "cuda": CUDA_PROVIDER,
    "tensorrt": "TensorrtExecutionProvider",
}
# Routers up to this file size score one row on the event loop, not on a worker thread: the
# bundled MLP (230 kB) takes ~12 us per call, a thread hop ~60-90 us of CPU and wall time
# (measured on the project's 2-core CPU; bench/RESULTS.md). A file this size holds at most
# ~250k float32 weights, well under a millisecond per row; larger ones (kNN over thousands of
# stored embeddings) keep the thread so that they never stall the loop.
INLINE_MAX_BYTES = 1 << 20
_DUMMY_BATCH = 2
# onnxruntime's default logger severity (warning), restored after a quiet session creation.
_ORT_DEFAULT_SEVERITY = 2
_ORT_FATAL_ONLY = 4


class RouterLoadError(Exception):
    """A router file that cannot serve: missing, not ONNX, or not matching the contract."""


@dataclass(frozen=True)
class RouterModel:
    """A checked router file and its inference session.

    ``provider`` is the execution provider the session really uses, which can differ from the
    one asked for (onnxruntime falls back to the CPU when CUDA cannot start).
    ``uses_query_length``: the graph has the contract's optional ``query_length`` input.
    ``inline``: the file is small enough (:data:`INLINE_MAX_BYTES`) to score on the event loop.
    """

    path: Path
    session: ort.InferenceSession
    provider: str
    sha256: str  # of the file: the router's version in metrics and live records
    embedding_model: str
    embedding_dim: int
    label_scheme: str
    default_threshold: float
    calibration: Calibration | None
    models: dict[str, str]
    router_kind: str
    metadata: dict[str, str]
    uses_query_length: bool = False
    inline: bool = False
    # Contract v2: the outputs the graph has and the ordered ids of ``dars.models`` (empty for
    # a score-only file without them).
    outputs: tuple[str, ...] = (OUTPUT_NAME,)
    model_ids: tuple[str, ...] = ()
    # ``dars.quality_calibration`` of a file with ``quality``: predicted qualities ``[n, K]``
    # of the trainer's calibration queries (spend calibration before live traffic), or None.
    quality_calibration: np.ndarray | None = None

    @property
    def has_score(self) -> bool:
        """A two-model router: routes by ``score >= threshold``."""
        return OUTPUT_NAME in self.outputs

    @property
    def decides_by_utility(self) -> bool:
        """A K-model router without ``score``: routes by utility (app.utility)."""
        return QUALITY_OUTPUT_NAME in self.outputs and OUTPUT_NAME not in self.outputs

    def score(self, embeddings: np.ndarray, query_length: Any = None) -> np.ndarray:
        """Scores (probability the cloud model is needed) of ``[n, dim]`` embeddings, ``[n]``.

        ``query_length`` (``[n]`` characters of each embedded text) is required by a router
        with that input and ignored by one without.
        """
        (scores,) = self.run([OUTPUT_NAME], embeddings, query_length)
        scores = scores.reshape(-1)
        if scores.shape != (len(embeddings),) or not np.all(np.isfinite(scores)):
            raise RouterUnavailable("the router model returned malformed scores")
        return scores

    def quality(self, embeddings: np.ndarray, query_length: Any = None) -> np.ndarray:
        """Predicted quality of each of the ``model_ids``, ``[n, K]`` (contract v2)."""
        (quality,) = self.run([QUALITY_OUTPUT_NAME], embeddings, query_length)
        if quality.shape != (len(embeddings), len(self.model_ids)) or not np.all(
            np.isfinite(quality)
        ):
            raise RouterUnavailable("the router model returned malformed qualities")
        return quality

    def run(
        self, names: list[str], embeddings: np.ndarray, query_length: Any = None
    ) -> list[np.ndarray]:
        """The outputs ``names`` of ``[n, dim]`` embeddings, as float32 arrays."""
        batch = np.ascontiguousarray(embeddings, dtype=np.float32)
        if batch.ndim != 2 or batch.shape[1] != self.embedding_dim:
            raise ValueError(f"expected embeddings of shape [n, {self.embedding_dim}]")
        feed = {INPUT_NAME: batch}
        if self.uses_query_length:
            if query_length is None:
                raise ValueError(f"this router needs {LENGTH_INPUT_NAME!r} as well")
            lengths = np.ascontiguousarray(query_length, dtype=np.float32).reshape(-1)
            if lengths.shape != (batch.shape[0],):
                raise ValueError(f"expected {batch.shape[0]} query lengths")
            feed[LENGTH_INPUT_NAME] = lengths
        try:
            values = self.session.run(names, feed)
        except Exception as exc:  # onnxruntime's errors share no base class but Exception
            raise RouterUnavailable(f"the router model failed: {exc}") from exc
        return [np.asarray(value, dtype=np.float32) for value in values]

    def info(self) -> dict[str, str]:
        """Labels for ``dars_router_model`` and for status endpoints."""
        return {
            "path": str(self.path),
            "provider": self.provider,
            "embedding_model": self.embedding_model,
            "label_scheme": self.label_scheme,
            "router": self.router_kind,
            "default_threshold": repr(self.default_threshold),
        }


def resolve_providers(providers: str = "auto") -> list[str]:
    """The provider list for onnxruntime from ``DARS_ONNX_PROVIDERS``.

    ``auto``: CUDA then CPU when this onnxruntime build has CUDA, else CPU. Otherwise a comma
    list of provider names or the aliases ``cpu``, ``cuda``, ``tensorrt``; each must be in
    ``onnxruntime.get_available_providers()``.
    """
    available = ort.get_available_providers()
    if providers.strip().lower() == "auto":
        return [CUDA_PROVIDER, CPU_PROVIDER] if CUDA_PROVIDER in available else [CPU_PROVIDER]
    wanted = [
        _PROVIDER_ALIASES.get(name.strip().lower(), name.strip())
        for name in providers.split(",")
        if name.strip()
    ]
    if not wanted:
        raise RouterLoadError("no ONNX execution provider given")
    missing = [name for name in wanted if name not in available]
    if missing:
        raise RouterLoadError(
            f"ONNX execution provider(s) {missing} not available; available: {available}"
        )
    return wanted


def load_router_model(
    path: str | Path,
    *,
    expected_embedding_model: str,
    expected_dim: int,
    providers: str = "auto",
    intra_op_threads: int | None = None,
) -> RouterModel:
    """Load a router file and check it against the contract and the running encoder.

    Raises
    ------
    RouterLoadError
        File missing or not ONNX; input/output names, types or shapes not the contract's;
        embedding model or dimension not the encoder's; metadata missing or malformed;
        the dummy batch fails or scores outside ``[0, 1]``.
    """
    path = Path(path)
    if not path.is_file():
        raise RouterLoadError(f"router model file not found: {path}")
    wanted = resolve_providers(providers)
    auto = providers.strip().lower() == "auto"
    session = _create_session(path, wanted, intra_op_threads, quiet=auto)
    provider = session.get_providers()[0]
    if provider not in wanted:
        raise RouterLoadError(f"none of the providers {wanted} could start; onnxruntime fell back")
    if wanted[0] != provider:
        logger.info("router model runs on %s (%s could not start)", provider, wanted[0])

    meta = dict(session.get_modelmeta().custom_metadata_map)
    signature = _check_signature(session, meta, expected_dim)
    model = RouterModel(
        path=path,
        session=session,
        provider=provider,
        sha256=file_sha256(path),
        embedding_model=_required(meta, META_EMBEDDING_MODEL),
        embedding_dim=_parse_int(meta, META_EMBEDDING_DIM),
        label_scheme=meta.get(META_LABEL_SCHEME, "unknown"),
        default_threshold=_parse_threshold(meta, signature),
        calibration=_parse_calibration(meta),
        models=_parse_models(meta, signature),
        router_kind=meta.get(META_ROUTER, "unknown"),
        metadata=meta,
        uses_query_length=signature.uses_query_length,
        inline=path.stat().st_size <= INLINE_MAX_BYTES,
        outputs=signature.outputs,
        model_ids=signature.models or _model_ids(meta),
        quality_calibration=_parse_quality_calibration(meta, signature),
    )
    if model.embedding_model != expected_embedding_model:
        raise RouterLoadError(
            f"router was trained on embeddings of {model.embedding_model!r}, "
            f"but the service embeds with {expected_embedding_model!r}"
        )
    if model.embedding_dim != expected_dim:
        raise RouterLoadError(
            f"router metadata says {META_EMBEDDING_DIM}={model.embedding_dim}, "
            f"but the encoder produces {expected_dim}"
        )
    _check_dummy_batch(model, signature)
    return model


class Scorer:
    """Holds the serving router model; scores (off the loop unless tiny); reloads atomically.

    The embedding model of the service never changes at run time, so a reloaded router must
    match the first one's ``embedding_model`` and ``embedding_dim``.
    """

    def __init__(
        self,
        model: RouterModel,
        *,
        metrics: Metrics | None = None,
        providers: str = "auto",
        intra_op_threads: int | None = None,
        accept: Callable[[RouterModel], None] | None = None,
    ) -> None:
        self._model = model
        # Checks a reloaded file must also pass before it serves (raise RouterLoadError), e.g.
        # that every model a K-model router knows is a configured upstream.
        self.accept = accept
        self._metrics = metrics
        self.providers = providers
        self.intra_op_threads = intra_op_threads
        self._reload_lock = threading.Lock()
        self._export_router(model)

    @property
    def model(self) -> RouterModel:
        return self._model

    async def score(self, vector: np.ndarray, query_length: int | None = None) -> float:
        """Score of one ``[dim]`` embedding: inline for a small router, else on a worker thread.

        ``query_length``: characters of the embedded text, for routers that take it.
        """
        model = self._model  # one model for the whole call, even if a reload swaps it
        started = time.perf_counter()
        lengths = None if query_length is None else [float(query_length)]
        row = np.reshape(vector, (1, -1))
        if model.inline:
            scores = model.score(row, lengths)
        else:
            scores = await asyncio.to_thread(model.score, row, lengths)
        value = float(scores[0])
        if self._metrics is not None:
            self._metrics.latency.labels(stage="scoring").observe(time.perf_counter() - started)
            self._metrics.score.observe(value)
        return value

    async def quality(self, vector: np.ndarray, query_length: int | None = None) -> np.ndarray:
        """Predicted quality ``[K]`` of one ``[dim]`` embedding (a K-model router), inline for
        a small router, else on a worker thread."""
        model = self._model
        started = time.perf_counter()
        lengths = None if query_length is None else [float(query_length)]
        row = np.reshape(vector, (1, -1))
        if model.inline:
            quality = model.quality(row, lengths)
        else:
            quality = await asyncio.to_thread(model.quality, row, lengths)
        if self._metrics is not None:
            self._metrics.latency.labels(stage="scoring").observe(time.perf_counter() - started)
        return np.asarray(quality[0], dtype=np.float64)

    def reload(self, path: str | Path) -> RouterModel:
        """Load, check and swap in a new router file; blocking (call it via ``to_thread``).

        Raises ``RouterLoadError`` and keeps the current model when the file is unusable.
        """
        with self._reload_lock:
            current = self._model
            try:
                model = load_router_model(
                    path,
                    expected_embedding_model=current.embedding_model,
                    expected_dim=current.embedding_dim,
                    providers=self.providers,
                    intra_op_threads=self.intra_op_threads,
                )
                if self.accept is not None:
                    self.accept(model)
            except RouterLoadError:
                self._count_reload("rejected")
                raise
            self._model = model
        self._count_reload("ok")
        self._export_router(model)
        logger.info("router model reloaded from %s (provider %s)", model.path, model.provider)
        return model

    def _export_router(self, model: RouterModel) -> None:
        """The serving router's info and file hash, so dashboards show versions over time."""
        if self._metrics is not None:
            self._metrics.router_info.info(model.info())
            self._metrics.live.set_router(model.sha256, time.time())

    def _count_reload(self, result: str) -> None:
        if self._metrics is not None:
            self._metrics.router_reloads.labels(result=result).inc()


@contextmanager
def _quiet_onnxruntime(quiet: bool) -> Iterator[None]:
    """Silence onnxruntime's global logger while CUDA is tried on a machine that may lack it.

    With ``auto``, a CPU-only machine would otherwise print a red error about a missing CUDA
    library on every load; whether CUDA is used is checked and logged by us instead.
    """
    if not quiet:
        yield
        return
    ort.set_default_logger_severity(_ORT_FATAL_ONLY)
    try:
        yield
    finally:
        ort.set_default_logger_severity(_ORT_DEFAULT_SEVERITY)


def _create_session(
    path: Path, providers: list[str], intra_op_threads: int | None, *, quiet: bool
) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.inter_op_num_threads = 1  # a router graph is a chain; no parallel branches
    if intra_op_threads is None and path.stat().st_size <= INLINE_MAX_BYTES:
        intra_op_threads = 1  # one row through a small graph: a thread pool only adds wake-ups
    if intra_op_threads is not None:
        options.intra_op_num_threads = intra_op_threads
    # Idle pool threads sleep instead of spinning: they share the cores with the event loop.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if quiet:
        options.log_severity_level = _ORT_FATAL_ONLY
    try:
        with _quiet_onnxruntime(quiet):
            return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime's errors share no base class but Exception
        raise RouterLoadError(f"{path} is not a loadable ONNX model: {exc}") from exc


def _check_signature(
    session: ort.InferenceSession, meta: dict[str, str], expected_dim: int
) -> RouterSignature:
    """The contract's validator on the session's inputs and outputs (and, for a file with
    ``quality``, its metadata); then the encoder's dimension."""
    inputs, outputs = tensor_specs_from_session(session)
    try:
        signature = check_router_signature(inputs, outputs, None)
        if signature.has_quality:
            signature = check_router_signature(inputs, outputs, meta)
    except ContractError as exc:
        raise RouterLoadError(f"router file breaks the contract: {exc}") from exc
    if signature.embedding_dim != expected_dim:
        raise RouterLoadError(
            f"router input {INPUT_NAME!r} has dimension {signature.embedding_dim}, "
            f"the encoder produces {expected_dim}"
        )
    return signature


def _check_dummy_batch(model: RouterModel, signature: RouterSignature) -> None:
    """Run unit vectors (and lengths) through every output; the contract checks the values."""
    batch = np.zeros((_DUMMY_BATCH, model.embedding_dim), dtype=np.float32)
    batch[0, :] = 1.0 / math.sqrt(model.embedding_dim)
    batch[1, 0] = 1.0
    lengths = [1.0, float(DEFAULT_QUERY_MAX_CHARS)]  # ignored by a router without the input
    try:
        values = model.run(list(signature.outputs), batch, lengths)
        check_dry_run(dict(zip(signature.outputs, values, strict=True)), _DUMMY_BATCH, signature)
    except (RouterUnavailable, ValueError) as exc:  # ContractError is a ValueError
        raise RouterLoadError(f"router failed on a dummy batch: {exc}") from exc


def _required(meta: dict[str, str], key: str) -> str:
    value = meta.get(key)
    if value is None or not value.strip():
        raise RouterLoadError(f"router metadata lacks {key!r}")
    return value


def _parse_int(meta: dict[str, str], key: str) -> int:
    text = _required(meta, key)
    try:
        return int(text)
    except ValueError as exc:
        raise RouterLoadError(f"router metadata {key!r} is not an integer: {text!r}") from exc


def _parse_threshold(meta: dict[str, str], signature: RouterSignature) -> float:
    """``dars.default_threshold``; optional for a K-model file (then the utility default)."""
    if not signature.has_score and META_DEFAULT_THRESHOLD not in meta:
        return DEFAULT_TRADEOFF
    text = _required(meta, META_DEFAULT_THRESHOLD)
    try:
        value = float(text)
    except ValueError as exc:
        raise RouterLoadError(
            f"router metadata {META_DEFAULT_THRESHOLD!r} is not a number: {text!r}"
        ) from exc
    if not 0.0 <= value <= 1.0:  # also false for nan
        raise RouterLoadError(f"router metadata {META_DEFAULT_THRESHOLD!r} must be in [0, 1]")
    return value


def _parse_calibration(meta: dict[str, str]) -> Calibration | None:
    text = meta.get(META_CALIBRATION)
    if text is None:
        return None
    try:
        calibration = Calibration.from_json(text)
    except (ValueError, KeyError, TypeError) as exc:
        raise RouterLoadError(f"router metadata {META_CALIBRATION!r} is malformed: {exc}") from exc
    return calibration


def _parse_quality_calibration(
    meta: dict[str, str], signature: RouterSignature
) -> np.ndarray | None:
    """``dars.quality_calibration`` as ``[n, K]`` float64 (the contract's parser), else None."""
    text = meta.get(META_QUALITY_CALIBRATION)
    if text is None or signature.n_models is None:
        return None
    try:
        rows = parse_quality_calibration(text, signature.n_models)
    except ContractError as exc:
        raise RouterLoadError(f"router file breaks the contract: {exc}") from exc
    return np.asarray(rows, dtype=np.float64)


def _model_ids(meta: dict[str, str]) -> tuple[str, ...]:
    """The ordered ids of ``dars.models`` (contract's parser); empty when absent."""
    text = meta.get(META_MODELS)
    if text is None:
        return ()
    try:
        return parse_models(text)
    except ContractError as exc:
        raise RouterLoadError(f"router metadata {META_MODELS!r} is not valid: {exc}") from exc


def _parse_models(meta: dict[str, str], signature: RouterSignature) -> dict[str, str]:
    """``{"edge": ..., "cloud": ...}`` of a score router (either ``dars.models`` form)."""
    ids = _model_ids(meta)
    if not ids or not signature.has_score:
        return {}
    if len(ids) != 2:
        raise RouterLoadError(
            f"router metadata {META_MODELS!r}: a router with {OUTPUT_NAME!r} knows exactly two "
            f"models (edge, cloud), names {list(ids)}"
        )
    return {"edge": ids[0], "cloud": ids[1]}
