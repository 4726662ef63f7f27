"""Utility routing over K models: the decision, its knob, expected costs and spend calibration.

A router file with a ``quality`` output (contract v2) predicts ``q_k``, the mean quality of each
model it knows. The service sends the request to the upstream with the highest utility

    U_k = q_k - lambda * c_k / max_j c_j

where ``c_k`` is model k's expected cost of one request in USD (its prices times its running
token averages, :class:`TokenAverages`) and the maximum runs over the router's models; equal
utilities go to the cheaper model. The rule is the trainer's (``router_models.evaluate_multi.
route``, imported, not copied), so offline curves and serving agree. ``lambda`` is quality
points per "price of the dearest model".

The knob ``t`` in ``[0, 1]`` (``router-<t>``, the server's threshold value) maps to
``lambda = t / (1 - t)``: ``t = 0`` is "best predicted quality", ``t = 0.5`` is ``lambda = 1``,
``t = 1`` is "always the cheapest" (equal prices: the higher predicted quality). The chosen
model's cost never rises as ``t`` rises (the trainer's monotonicity argument; ``lambda`` is
increasing in ``t``), so a larger knob never picks a dearer model, the same direction as the
two-model threshold (``router-1`` is all edge there too).
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from app.errors import InvalidRequest
from router_models.evaluate_multi import route as utility_route
from router_models.prices import DEFAULT_OUTPUT_TOKENS

if TYPE_CHECKING:
    from app.upstream import Upstreams
    from app.upstreams_file import UpstreamsConfig

__all__ = [
    "DEFAULT_TRADEOFF",
    "MIN_LIVE_ROWS",
    "PRIOR_TOKENS",
    "QualityWindow",
    "TokenAverages",
    "UtilityChoice",
    "UtilityDecision",
    "UtilityRouter",
    "choices",
    "choose",
    "cloud_share_for_spend",
    "knob_for_spend",
    "knob_lambda",
]

FloatArray = npt.NDArray[np.float64]

# The server knob of a quality router whose file carries no dars.default_threshold: best
# predicted quality (ties to the cheaper); calibrate to a spend to trade quality for cost.
DEFAULT_TRADEOFF = 0.0
# Token counts assumed before any upstream reported usage (router_models.prices' default).
PRIOR_TOKENS = (DEFAULT_OUTPUT_TOKENS, DEFAULT_OUTPUT_TOKENS)
# Live rows a spend calibration needs (as policy.MIN_LIVE_SCORES for the cloud share).
MIN_LIVE_ROWS = 50
_BISECTIONS = 40


def knob_lambda(knob: float) -> float:
    """``lambda = t / (1 - t)`` of the knob ``t`` in [0, 1]; ``inf`` at 1."""
    if not 0.0 <= knob <= 1.0:
        raise ValueError("the knob must lie within [0, 1]")
    return math.inf if knob >= 1.0 else knob / (1.0 - knob)


def _unit(cost: FloatArray) -> FloatArray:
    top = float(cost.max()) if cost.size else 0.0
    return cost / top if top > 0 else np.zeros_like(cost)


def choices(quality: FloatArray, cost: FloatArray, knob: float) -> npt.NDArray[np.intp]:
    """The chosen column of each row of ``quality`` ``[n, K]`` at knob ``knob``."""
    unit, lam = _unit(cost), knob_lambda(knob)
    if math.isinf(lam):  # the cheapest; among equal prices the higher quality
        cheapest = unit == unit.min()
        masked = np.where(cheapest[None, :], quality, -np.inf)
        out: npt.NDArray[np.intp] = np.argmax(masked, axis=1)
        return out
    return utility_route(quality, unit, lam)


@dataclass(frozen=True)
class UtilityChoice:
    """One decision: the chosen column, the runner-up (next best utility) and lambda."""

    index: int
    runner_up: int | None
    lam: float


def choose(quality: FloatArray, cost: FloatArray, knob: float) -> UtilityChoice:
    """The decision for one query's predicted qualities ``[K]`` and costs ``[K]``; the
    runner-up is the model with the next best utility on the same scale."""
    row = np.asarray(quality, dtype=np.float64).reshape(1, -1)
    unit, lam = _unit(cost), knob_lambda(knob)
    if math.isinf(lam):
        order = np.lexsort((-row[0], unit))
        best, second = int(order[0]), (int(order[1]) if order.size > 1 else None)
        return UtilityChoice(best, second, lam)
    best = int(utility_route(row, unit, lam)[0])
    runner_up: int | None = None
    if row.shape[1] > 1:
        rest = row.copy()
        rest[0, best] = -np.inf
        runner_up = int(utility_route(rest, unit, lam)[0])
    return UtilityChoice(best, runner_up, lam)


def knob_for_spend(quality: FloatArray, cost: FloatArray, usd_per_request: float) -> float:
    """The smallest knob whose mean cost over ``quality``'s rows is at most ``usd_per_request``.

    Spend is non-increasing in the knob, so bisection finds it; a target below the cheapest
    model's cost gives 1 (always the cheapest), one above the best-quality spend gives 0.
    """

    def spend(knob: float) -> float:
        return float(cost[choices(quality, cost, knob)].mean())

    if spend(0.0) <= usd_per_request:
        return 0.0
    low, high = 0.0, 1.0
    for _ in range(_BISECTIONS):
        middle = (low + high) / 2
        low, high = (low, middle) if spend(middle) <= usd_per_request else (middle, high)
    return high


def cloud_share_for_spend(usd_per_request: float, edge_cost: float, cloud_cost: float) -> float:
    """The cloud share whose mean cost is ``usd_per_request`` (two models), clipped to [0, 1]."""
    if cloud_cost <= edge_cost:
        return 1.0 if usd_per_request >= cloud_cost else 0.0
    share = (usd_per_request - edge_cost) / (cloud_cost - edge_cost)
    return min(1.0, max(0.0, share))


class TokenAverages:
    """Running mean prompt and completion tokens per upstream over its last ``window`` answers.

    An upstream without answers yet uses the mean of all upstreams' answers (the same queries
    reach every model), and before any answer :data:`PRIOR_TOKENS`. Thread-safe.
    """

    def __init__(self, window: int = 1000) -> None:
        self._window = window
        self._seen: dict[str, deque[tuple[int, int]]] = {}
        self._lock = threading.Lock()

    def record(self, upstream: str, prompt_tokens: int, completion_tokens: int) -> None:
        with self._lock:
            rows = self._seen.setdefault(upstream, deque(maxlen=self._window))
            rows.append((prompt_tokens, completion_tokens))

    def expected(self, upstream: str) -> tuple[float, float]:
        """(prompt, completion) tokens expected from ``upstream`` for one request."""
        with self._lock:
            rows = list(self._seen.get(upstream, ()))
            if not rows:
                rows = [row for seen in self._seen.values() for row in seen]
        if not rows:
            return PRIOR_TOKENS
        prompt, completion = np.asarray(rows, dtype=np.float64).mean(axis=0)
        return float(prompt), float(completion)


class QualityWindow:
    """The predicted qualities of recent routed requests: spend calibration's live data."""

    def __init__(self, window: int) -> None:
        self._rows: deque[FloatArray] = deque(maxlen=window)
        self._lock = threading.Lock()

    def add(self, quality: FloatArray) -> None:
        with self._lock:
            if self._rows and self._rows[-1].shape != quality.shape:
                self._rows.clear()  # another router's columns
            self._rows.append(np.asarray(quality, dtype=np.float64))

    def rows(self) -> FloatArray:
        with self._lock:
            return np.stack(list(self._rows)) if self._rows else np.empty((0, 0))

    def clear(self) -> None:
        with self._lock:
            self._rows.clear()


@dataclass(frozen=True)
class UtilityDecision:
    """A utility decision in upstream names: chosen, its predicted quality, the runner-up."""

    upstream: str
    quality: float
    runner_up: str | None
    lam: float


class UtilityRouter:
    """Decides among the upstreams a quality router knows, from live prices and token counts."""

    def __init__(self, config: UpstreamsConfig, upstreams: Upstreams, *, window: int) -> None:
        self.config = config
        self.upstreams = upstreams
        self.window = QualityWindow(window)
        self._targets: dict[tuple[str, ...], tuple[str, ...]] = {}

    def targets(self, model_ids: Sequence[str]) -> tuple[str, ...]:
        """The upstream of each router model id; ``KeyError`` naming the unknown ids."""
        key = tuple(model_ids)
        if key not in self._targets:
            self._targets[key] = self.config.resolve_router_ids(key)
        return self._targets[key]

    def costs(self, names: Sequence[str]) -> FloatArray:
        """Expected USD per request of each upstream: prices times running token averages."""
        out = []
        for name in names:
            prompt, completion = self.upstreams.tokens.expected(name)
            config = self.upstreams[name].config
            usd = prompt * config.price_input_per_mtok + completion * config.price_output_per_mtok
            out.append(usd / 1e6)
        return np.asarray(out, dtype=np.float64)

    def decide(self, quality: FloatArray, model_ids: Sequence[str], knob: float) -> UtilityDecision:
        names = self.targets(model_ids)
        choice = choose(quality, self.costs(names), knob)
        runner_up = None if choice.runner_up is None else names[choice.runner_up]
        return UtilityDecision(
            names[choice.index], float(quality[choice.index]), runner_up, choice.lam
        )

    def spend_per_1k(
        self, model_ids: Sequence[str], knob: float, file_rows: FloatArray | None = None
    ) -> float | None:
        """Expected USD per 1000 requests at ``knob``: over the live window's queries, or over
        ``file_rows`` (the file's calibration data) while the window holds fewer than
        :data:`MIN_LIVE_ROWS`, as :meth:`knob_for_spend` calibrates; ``None`` without either."""
        rows = self._calibration_rows(model_ids, file_rows)
        if rows is None:
            return None
        cost = self.costs(self.targets(model_ids))
        return float(cost[choices(rows, cost, knob)].mean()) * 1000.0

    def knob_for_spend(
        self,
        model_ids: Sequence[str],
        usd_per_1k_requests: float,
        file_rows: FloatArray | None = None,
    ) -> float:
        """The knob that spends about ``usd_per_1k_requests`` at the current expected costs.

        On the live window's queries when it holds :data:`MIN_LIVE_ROWS` requests, else on
        ``file_rows`` (the router file's ``dars.quality_calibration``), else raises
        ``InvalidRequest`` (``calibration_unavailable``).
        """
        rows = self._calibration_rows(model_ids, file_rows)
        if rows is None or (rows is not file_rows and rows.shape[0] < MIN_LIVE_ROWS):
            live = 0 if rows is None else rows.shape[0]
            raise InvalidRequest(
                f"cannot calibrate to a spend yet: {live} routed requests since the router "
                f"was loaded (need {MIN_LIVE_ROWS}); this router file carries no calibration "
                "data (dars.quality_calibration), so the spend is calibrated on live traffic "
                "only",
                param="usd_per_1k_requests",
                code="calibration_unavailable",
            )
        cost = self.costs(self.targets(model_ids))
        return knob_for_spend(rows, cost, usd_per_1k_requests / 1000.0)

    def _calibration_rows(
        self, model_ids: Sequence[str], file_rows: FloatArray | None
    ) -> FloatArray | None:
        """The live window when it holds :data:`MIN_LIVE_ROWS` rows of this router, else
        ``file_rows`` when given, else the (smaller) live window when not empty, else None."""
        rows = self.window.rows()
        live = rows if rows.shape[0] and rows.shape[1] == len(model_ids) else None
        if live is not None and live.shape[0] >= MIN_LIVE_ROWS:
            return live
        if file_rows is not None and file_rows.ndim == 2 and file_rows.shape[1] == len(model_ids):
            return file_rows
        return live
