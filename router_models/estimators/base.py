"""What every router estimator shares: input checks, the ONNX envelope, and the torch loop.

A router is a scikit-learn estimator whose ``predict`` returns, for each L2-normalised query
embedding, the probability in ``[0, 1]`` that the strong (cloud) model is needed. It also
writes itself as an ONNX graph (``to_onnx``) that computes the same score, so that the service
can run it without Python training code. Subclasses only supply ``_build_onnx``: the nodes
from ``embedding`` to ``score``; this module wraps them into a checked model with the contract's
names, a dynamic batch axis and the metadata.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from numbers import Integral, Real
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from router_models.contract import INPUT_NAME, OUTPUT_NAME

if TYPE_CHECKING:
    import torch

__all__ = [
    "EPS",
    "KNN_PARAMETER_CONSTRAINTS",
    "ONNX_IR_VERSION",
    "ONNX_OPSET",
    "TORCH_PARAMETER_CONSTRAINTS",
    "FloatArray",
    "GraphBuilder",
    "RouterMixin",
    "TorchFitResult",
    "TorchRouterMixin",
    "check_hidden_layer_sizes",
    "check_pairs",
    "cosine_to",
    "fit_torch",
    "float32_values",
    "mlp_logits",
    "nearest_neighbours",
    "neighbour_mean",
    "neighbour_points",
    "router_model",
    "seed_from",
    "sigmoid",
    "subsample_indices",
    "torch_seeded",
    "unit_rows",
]

FloatArray = npt.NDArray[np.float64]
# ``(points, targets, weights)`` in and out: folds duplicate embeddings of a kNN router.
RowTriple = tuple[FloatArray, FloatArray, FloatArray]
MergeRows = Callable[[FloatArray, FloatArray, FloatArray], RowTriple]

ONNX_OPSET = 17
# IR version 8 belongs to opset 17: older onnxruntime builds in the service can still load it.
ONNX_IR_VERSION = 8
# Guards divisions; small enough to never move a score by more than float32 resolution.
EPS = 1e-12
_PRODUCER = "dars-router"


def unit_rows(X: FloatArray) -> FloatArray:
    """Rows scaled to unit L2 norm (zero rows stay zero), so that a dot product is a cosine."""
    norms = np.sqrt(np.sum(X * X, axis=1, keepdims=True))
    out: FloatArray = X / np.maximum(norms, EPS)
    return out


def float32_values(array: Any) -> FloatArray:
    """A float64 array of float32-rounded values: what predict uses is what the ONNX file holds."""
    out: FloatArray = np.asarray(array, dtype=np.float32).astype(np.float64)
    return out


def cosine_to(X: FloatArray, points: FloatArray) -> FloatArray:
    """Cosine of every row of ``X`` to every stored unit-norm point (memory-based routers)."""
    out: FloatArray = unit_rows(X) @ points.T
    return out


def mlp_logits(X: FloatArray, coefs: list[FloatArray], intercepts: list[FloatArray]) -> FloatArray:
    """Output-layer pre-activations of a ReLU perceptron stored as numpy weights."""
    h = X
    for coef, intercept in zip(coefs[:-1], intercepts[:-1], strict=True):
        h = np.maximum(h @ coef + intercept, 0.0)
    out: FloatArray = h @ coefs[-1] + intercepts[-1]
    return out


def sigmoid(z: FloatArray) -> FloatArray:
    """Logistic function without overflow warnings for large ``|z|``."""
    out: FloatArray = 0.5 * (1.0 + np.tanh(0.5 * z))
    return out


def seed_from(random_state: Any) -> int:
    """One integer seed from a scikit-learn ``random_state`` (``None``, int or RandomState)."""
    return int(check_random_state(random_state).randint(0, 2**31 - 1))


def subsample_indices(n: int, max_points: int | None, random_state: Any) -> npt.NDArray[np.intp]:
    """Sorted indices of at most ``max_points`` of ``n`` rows, drawn without replacement.

    Memory-based routers store their training points in the ONNX file; the cap keeps the
    file small (384 float32 per point: 2,000 points are about 3 MB).
    """
    if max_points is None or n <= max_points:
        return np.arange(n)
    rng = np.random.default_rng(seed_from(random_state))
    return np.sort(rng.choice(n, size=max_points, replace=False))


# Hyper-parameters of the cosine k-nearest-neighbour routers.
KNN_PARAMETER_CONSTRAINTS: dict[str, list[Any]] = {
    "n_neighbors": [Interval(Integral, 1, None, closed="left")],
    "weights": [StrOptions({"uniform", "similarity"})],
    "max_points": [Interval(Integral, 1, None, closed="left"), None],
    "random_state": ["random_state"],
}


def neighbour_points(
    merge: Callable[
        [FloatArray, FloatArray, FloatArray], tuple[FloatArray, FloatArray, FloatArray]
    ],
    X: FloatArray,
    targets: FloatArray,
    weight: FloatArray,
    seen: npt.NDArray[np.bool_],
    max_points: int | None,
    random_state: Any,
) -> RowTriple:
    """Stored points of a kNN router: unit-norm embeddings, targets and weights (float32 values).

    Rows not ``seen`` are dropped (a zero-weight point must not take a neighbour's place),
    ``merge`` folds duplicate embeddings into one row, and at most ``max_points`` are kept.
    """
    points, values, totals = merge(unit_rows(X[seen]), targets[seen], weight[seen])
    keep = subsample_indices(points.shape[0], max_points, random_state)
    return float32_values(points[keep]), float32_values(values[keep]), float32_values(totals[keep])


def n_nearest(n_neighbors: int, points: FloatArray) -> int:
    """Neighbours used per query: ``n_neighbors``, or every stored point if there are fewer."""
    return min(int(n_neighbors), int(points.shape[0]))


def nearest_neighbours(
    X: FloatArray, points: FloatArray, n_neighbors: int
) -> tuple[FloatArray, npt.NDArray[np.intp]]:
    """Cosine similarity and indices ``[n, k]`` of the (unordered) k most similar stored points."""
    similarity = cosine_to(X, points)
    k = n_nearest(n_neighbors, points)
    top: npt.NDArray[np.intp] = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
    return np.take_along_axis(similarity, top, axis=1), top


def similarity_scale(similarity: FloatArray) -> FloatArray:
    """Neighbour weight factor ``(1 + cos) / 2`` of the ``weights="similarity"`` scheme."""
    out: FloatArray = (1.0 + similarity) * 0.5
    return out


def neighbour_mean(w: FloatArray, values: FloatArray, fallback: Any) -> FloatArray:
    """Weighted mean over the neighbour axis (1), pulled to ``fallback`` when all weights are 0."""
    numerator = np.sum(w * values, axis=1) + EPS * fallback
    out: FloatArray = numerator / (np.sum(w, axis=1) + EPS)
    return out


def check_hidden_layer_sizes(hidden_layer_sizes: Iterable[int]) -> tuple[int, ...]:
    """The two hidden widths of a perceptron router, checked to be positive integers."""
    sizes = tuple(hidden_layer_sizes)
    if len(sizes) != 2 or not all(isinstance(s, Integral) and s >= 1 for s in sizes):
        raise ValueError("hidden_layer_sizes must be two positive integers")
    return sizes


@contextmanager
def torch_seeded(seed: int) -> Iterator[None]:
    """Seed torch's CPU generator for the block (parameter initialisation), then restore it."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def check_pairs(
    pairs: Any, n_samples: int, n_models: int | None, strong_index: int, weak_index: int
) -> tuple[npt.NDArray[np.intp], int]:
    """Validate per-row ``(model_a, model_b)`` indices; ``None`` means every row is strong-vs-weak.

    Returns the ``[n, 2]`` index array and the number of models.
    """
    if strong_index == weak_index:
        raise ValueError("strong_index and weak_index must differ")
    if pairs is None:
        out = np.tile(np.array([strong_index, weak_index], dtype=np.intp), (n_samples, 1))
    else:
        out = np.asarray(pairs)
        if out.shape != (n_samples, 2) or not np.issubdtype(out.dtype, np.integer):
            raise ValueError(f"pairs must be an integer array of shape ({n_samples}, 2)")
        out = out.astype(np.intp)
        if np.any(out < 0) or np.any(out[:, 0] == out[:, 1]):
            raise ValueError("pairs must hold two different non-negative model indices per row")
    needed = int(max(out.max(initial=0), strong_index, weak_index)) + 1
    if n_models is None:
        n_models = needed
    elif n_models < needed:
        raise ValueError(f"n_models={n_models} but a model index up to {needed - 1} is used")
    return out, n_models


class GraphBuilder:
    """Tiny helper that names ONNX nodes and constants, so estimators read like numpy code."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def _name(self, stem: str) -> str:
        self._count += 1
        return f"{stem}_{self._count}"

    def const(self, array: Any, stem: str = "const", dtype: Any = np.float32) -> str:
        """Add a constant tensor (float32 unless told) and return its name."""
        name = self._name(stem)
        self.initializers.append(numpy_helper.from_array(np.asarray(array, dtype=dtype), name))
        return name

    def op(self, op_type: str, *inputs: str, output: str | None = None, **attrs: Any) -> str:
        """Add one node with a single output and return that output's name."""
        out = output or self._name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], **attrs))
        return out

    def op_multi(self, op_type: str, inputs: list[str], n_outputs: int, **attrs: Any) -> list[str]:
        """Add one node with several outputs (e.g. ``TopK``) and return their names."""
        outs = [self._name(op_type.lower()) for _ in range(n_outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, **attrs))
        return outs

    def unit_rows(self, x: str) -> str:
        """ONNX twin of :func:`unit_rows`."""
        norm = self.op("ReduceL2", x, axes=[1], keepdims=1)
        return self.op("Div", x, self.op("Max", norm, self.const(EPS)))

    def cosine_to(self, x: str, points: FloatArray) -> str:
        """ONNX twin of :func:`cosine_to`: ``[batch, n_points]`` cosines to stored points."""
        return self.op("MatMul", self.unit_rows(x), self.const(points.T, "points"))

    def mlp_logits(self, x: str, coefs: list[FloatArray], intercepts: list[FloatArray]) -> str:
        """ONNX twin of :func:`mlp_logits`."""
        h = x
        for i, (coef, intercept) in enumerate(zip(coefs, intercepts, strict=True)):
            h = self.op(
                "Add", self.op("MatMul", h, self.const(coef, "W")), self.const(intercept, "b")
            )
            if i < len(coefs) - 1:
                h = self.op("Relu", h)
        return h

    def to_vector(self, column: str, output: str | None = None) -> str:
        """``[batch, 1]`` to ``[batch]``."""
        return self.op("Reshape", column, self.const([-1], dtype=np.int64), output=output)

    def nearest_neighbours(self, x: str, points: FloatArray, n_neighbors: int) -> list[str]:
        """``[similarity, indices]`` of the k stored points most similar to each row of ``x``."""
        similarity = self.cosine_to(x, points)
        k = self.const([n_nearest(n_neighbors, points)], dtype=np.int64)
        return self.op_multi("TopK", [similarity, k], 2, axis=1, largest=1, sorted=1)

    def similarity_scale(self, similarity: str) -> str:
        """``(1 + cos) / 2``, as :func:`similarity_scale`."""
        return self.op("Mul", self.op("Add", self.const(1.0), similarity), self.const(0.5))

    def neighbour_mean(self, w: str, values: str, fallback: Any, output: str) -> str:
        """As :func:`neighbour_mean`: ``(sum(w * values) + EPS * fallback) / (sum(w) + EPS)``."""
        axis = self.const([1], dtype=np.int64)
        hits = self.op("Mul", w, values)
        numerator = self.op(
            "Add", self.op("ReduceSum", hits, axis, keepdims=0), self.const(EPS * fallback)
        )
        denominator = self.op("Add", self.op("ReduceSum", w, axis, keepdims=0), self.const(EPS))
        return self.op("Div", numerator, denominator, output=output)


class RouterMixin:
    """Input checks and ONNX export shared by all router estimators.

    Subclasses implement ``_build_onnx(builder, embedding, output)``, which adds nodes that
    turn the ``[batch, dim]`` input into the ``[batch]`` float32 output with the given name.
    """

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()  # type: ignore[misc]
        tags.target_tags.required = True
        tags.target_tags.single_output = True
        # Scores are probabilities learned from soft labels, not fits to arbitrary targets.
        if tags.regressor_tags is not None:
            tags.regressor_tags.poor_score = True
        return tags

    def _validate_fit(
        self, X: Any, y: Any, sample_weight: Any
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Check ``X``, the soft targets in ``[0, 1]`` and non-negative sample weights."""
        X, y = validate_data(self, X, y, dtype=np.float64, y_numeric=True, reset=True)
        y = np.asarray(y, dtype=np.float64)
        if np.any(y < 0.0) or np.any(y > 1.0):
            raise ValueError("y must hold probabilities in [0, 1]")
        if sample_weight is None:
            weight = np.ones(X.shape[0], dtype=np.float64)
        else:
            weight = np.asarray(sample_weight, dtype=np.float64)
            if weight.shape != (X.shape[0],):
                raise ValueError(f"sample_weight must have shape ({X.shape[0]},)")
            if not np.all(np.isfinite(weight)) or np.any(weight < 0.0):
                raise ValueError("sample_weight must be finite and non-negative")
        if weight.sum() <= 0.0:
            raise ValueError("sample_weight must not be all zero")
        return X, y, weight

    def _validate_predict(self, X: Any) -> FloatArray:
        check_is_fitted(self)
        out: FloatArray = validate_data(self, X, dtype=np.float64, reset=False)
        return out

    def _build_onnx(self, builder: GraphBuilder, embedding: str, output: str) -> None:
        raise NotImplementedError

    def _onnx_inputs(self, dim: int) -> list[onnx.ValueInfoProto]:
        """The graph inputs: ``embedding`` only; a router that reads more adds its own."""
        return [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", dim])]

    def to_onnx(self, metadata: Mapping[str, str] | None = None) -> onnx.ModelProto:
        """The fitted router as an ONNX model that follows ``router_models.contract``.

        Parameters
        ----------
        metadata : mapping of str to str, optional
            Written to ``metadata_props`` (see ``export_onnx.build_metadata``).

        Returns
        -------
        onnx.ModelProto
            Input ``embedding`` float32 ``[batch, n_features_in_]`` (plus what
            ``_onnx_inputs`` adds), output ``score`` float32 ``[batch]``; checked with
            ``onnx.checker``.
        """
        check_is_fitted(self)
        builder = GraphBuilder()
        self._build_onnx(builder, INPUT_NAME, OUTPUT_NAME)
        dim = int(self.n_features_in_)  # type: ignore[attr-defined]
        output = helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch"])
        return router_model(self, builder, self._onnx_inputs(dim), [output], metadata)


def router_model(
    estimator: object,
    builder: GraphBuilder,
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    metadata: Mapping[str, str] | None,
) -> onnx.ModelProto:
    """The checked ONNX model of a built graph: opset, IR version, producer and metadata."""
    graph = helper.make_graph(
        builder.nodes,
        f"dars_{type(estimator).__name__}",
        inputs,
        outputs,
        initializer=builder.initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
        producer_name=_PRODUCER,
        doc_string=(type(estimator).__doc__ or "").strip().splitlines()[0],
    )
    model.ir_version = ONNX_IR_VERSION
    for key, value in (metadata or {}).items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError("ONNX metadata keys and values must be strings")
        model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    onnx.checker.check_model(model)
    return model


@dataclass(frozen=True)
class TorchFitResult:
    """Outcome of :func:`fit_torch`: epochs run and the loss curves (weighted BCE)."""

    n_iter: int
    train_loss: tuple[float, ...]
    validation_loss: tuple[float, ...]
    best_loss: float


def _split(
    n: int, validation_fraction: float, rng: np.random.Generator
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    order = rng.permutation(n)
    n_val = round(validation_fraction * n) if n >= 10 else 0
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def fit_torch(
    module: torch.nn.Module,
    loss_sum: Callable[[npt.NDArray[np.intp]], tuple[torch.Tensor, torch.Tensor]],
    n_samples: int,
    *,
    seed: int,
    learning_rate: float,
    alpha: float,
    batch_size: int,
    max_iter: int,
    validation_fraction: float,
    n_iter_no_change: int,
    tol: float,
) -> TorchFitResult:
    """Adam with early stopping on a seeded validation split; leaves the best weights in place.

    ``loss_sum(rows)`` returns the weighted loss summed over those rows and the summed weight,
    so that every router keeps its own model and target while sharing the loop. Parameters
    must already be initialised (under the caller's seed). Runs on the CPU with whatever
    ``torch.set_num_threads`` the caller set.
    """
    import torch

    rng = np.random.default_rng(seed)
    train_rows, val_rows = _split(n_samples, validation_fraction, rng)
    optimizer = torch.optim.Adam(module.parameters(), lr=learning_rate, weight_decay=alpha)

    def mean_loss(rows: npt.NDArray[np.intp]) -> float:
        with torch.no_grad():
            total, weight = loss_sum(rows)
            return float(total / torch.clamp(weight, min=EPS))

    train_curve: list[float] = []
    val_curve: list[float] = []
    best = np.inf
    best_state = copy.deepcopy(module.state_dict())
    stale = 0
    for _ in range(max_iter):
        module.train()
        order = rng.permutation(train_rows)
        running = 0.0
        running_weight = 0.0
        for start in range(0, order.size, batch_size):
            rows = order[start : start + batch_size]
            total, weight = loss_sum(rows)
            loss = total / torch.clamp(weight, min=EPS)
            optimizer.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            running += float(total.detach())
            running_weight += float(weight)
        module.eval()
        train_curve.append(running / max(running_weight, EPS))
        current = mean_loss(val_rows) if val_rows.size else train_curve[-1]
        val_curve.append(current)
        if current < best - tol:
            best = current
            best_state = copy.deepcopy(module.state_dict())
            stale = 0
        else:
            stale += 1
            if stale >= n_iter_no_change:
                break
    module.load_state_dict(best_state)
    module.eval()
    return TorchFitResult(
        n_iter=len(train_curve),
        train_loss=tuple(train_curve),
        validation_loss=tuple(val_curve),
        best_loss=float(best),
    )


# Hyper-parameters of :func:`fit_torch` (``random_state`` seeds initialisation and split too).
TORCH_PARAMETER_CONSTRAINTS: dict[str, list[Any]] = {
    "alpha": [Interval(Real, 0, None, closed="left")],
    "learning_rate": [Interval(Real, 0, None, closed="neither")],
    "batch_size": [Interval(Integral, 1, None, closed="left")],
    "max_iter": [Interval(Integral, 1, None, closed="left")],
    "validation_fraction": [Interval(Real, 0, 1, closed="left")],
    "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
    "tol": [Interval(Real, 0, None, closed="left")],
    "random_state": ["random_state"],
}


class TorchRouterMixin(RouterMixin):
    """:class:`RouterMixin` plus the weighted soft-target BCE fit of the torch routers.

    Subclasses take the hyper-parameters in :data:`TORCH_PARAMETER_CONSTRAINTS` and supply
    only their module and its logits; the loss, the loop and the fitted curves are shared.
    """

    alpha: float
    learning_rate: float
    batch_size: int
    max_iter: int
    validation_fraction: float
    n_iter_no_change: int
    tol: float
    random_state: Any

    def _fit_bce(
        self,
        module: torch.nn.Module,
        logits: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        X: FloatArray,
        y: FloatArray,
        weight: FloatArray,
        *,
        seed: int,
    ) -> None:
        """Fit ``module`` with :func:`fit_torch` on weighted BCE of ``logits(x_rows, rows)``.

        ``logits`` gets the input rows and their indices (for per-row extras such as model
        pairs). Sets ``n_iter_``, ``loss_curve_`` and ``validation_scores_``.
        """
        import torch

        inputs = torch.from_numpy(X.astype(np.float32))
        targets = torch.from_numpy(y.astype(np.float32))
        weights = torch.from_numpy(weight.astype(np.float32))

        def loss_sum(rows: npt.NDArray[np.intp]) -> tuple[torch.Tensor, torch.Tensor]:
            at = torch.from_numpy(rows)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                logits(inputs[at], at), targets[at], weight=weights[at], reduction="sum"
            )
            return loss, weights[at].sum()

        result = fit_torch(
            module,
            loss_sum,
            X.shape[0],
            seed=seed,
            learning_rate=self.learning_rate,
            alpha=self.alpha,
            batch_size=self.batch_size,
            max_iter=self.max_iter,
            validation_fraction=self.validation_fraction,
            n_iter_no_change=self.n_iter_no_change,
            tol=self.tol,
        )
        self.n_iter_ = result.n_iter
        self.loss_curve_ = list(result.train_loss)
        self.validation_scores_ = list(result.validation_loss)

    def _fit_perceptron(
        self,
        X: FloatArray,
        y: FloatArray,
        weight: FloatArray,
        hidden_layer_sizes: tuple[int, ...],
        *,
        output_bias: FloatArray | None = None,
    ) -> None:
        """Fit a ReLU perceptron with one output per column of ``y`` (one for a 1-D ``y``).

        ``output_bias`` initialises the output layer's bias. Sets ``coefs_`` and
        ``intercepts_`` (float32-rounded ``[n_in, n_out]`` weights and their biases).
        """
        import torch

        seed = seed_from(self.random_state)
        widths = [X.shape[1], *hidden_layer_sizes, 1 if y.ndim == 1 else y.shape[1]]
        with torch_seeded(seed):
            layers: list[torch.nn.Module] = []
            for n_in, n_out in itertools.pairwise(widths):
                layers += [torch.nn.Linear(n_in, n_out), torch.nn.ReLU()]
            net = torch.nn.Sequential(*layers[:-1])
        linear = [m for m in net if isinstance(m, torch.nn.Linear)]
        if output_bias is not None:
            with torch.no_grad():
                linear[-1].bias.copy_(torch.from_numpy(output_bias))

        def logits(x: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = net(x)
            return out.reshape(-1) if y.ndim == 1 else out

        self._fit_bce(net, logits, X, y, weight, seed=seed)
        self.coefs_ = [float32_values(m.weight.detach().numpy().T) for m in linear]
        self.intercepts_ = [float32_values(m.bias.detach().numpy()) for m in linear]
