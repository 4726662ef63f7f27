"""Routing policy: from the ``model`` field and a router score to edge or cloud.

The threshold is the smallest probability that the cloud model is needed at which we pay for
the cloud: ``score >= threshold`` goes to the cloud, anything lower to the edge. So ``0`` sends
everything to the cloud and ``1`` everything to the edge (except a score of exactly 1).

Clients choose per request through the ``model`` field, so that any OpenAI client works:

    ``router``           the router decides with the server's threshold
    ``router-0.35``      the router decides with threshold 0.35 (any decimal in [0, 1])
    ``<edge model>``     forced to the edge, no scoring
    ``<cloud model>``    forced to the cloud, no scoring
    ``<any model>``      with ``DARS_UPSTREAMS_FILE``: forced to the upstream serving it

With a K-model router (contract v2, ``quality`` outputs) the same number ``t`` is the
quality/cost knob of :mod:`app.utility` (``lambda = t / (1 - t)``), in the same direction: a
larger ``t`` never picks a dearer model.
"""

from __future__ import annotations

import math
import numbers
import re
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from app.errors import InvalidRequest, ModelNotFound
from router_models.contract import Calibration

if TYPE_CHECKING:
    from prometheus_client import Gauge

    from app.metrics import Metrics
    from app.settings import Settings

__all__ = [
    "MIN_LIVE_SCORES",
    "ROUTER_MODEL",
    "Decision",
    "ModelSelection",
    "Reason",
    "Route",
    "ScoreListener",
    "ThresholdSnapshot",
    "ThresholdSource",
    "ThresholdState",
    "check_threshold",
    "decide",
    "parse_model_field",
]

# An upstream's name: ``edge``/``cloud`` in the two-model setup, any configured name otherwise.
Route = str
# cascade: the confidence cascade kept or escalated (app.cascade); gate: its router gate;
# utility: a K-model router's highest utility (app.utility).
Reason = Literal["threshold", "forced", "fallback", "cascade", "gate", "utility"]
ThresholdSource = Literal["default", "operator", "calibrated"]

ROUTER_MODEL = "router"
_THRESHOLD_PREFIX = ROUTER_MODEL + "-"
# Plain decimals only: no signs, exponents, underscores, spaces, nan or inf.
_DECIMAL = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")  # [0-9], not \d: ASCII digits only

# Fewer live scores than this and calibrate() uses the router file's quantiles instead: with 50
# scores, the 2%-steps between order statistics are finer than any share an operator asks for.
MIN_LIVE_SCORES = 50

# Called with every recorded (score, route): how replicas share the live window (app.shared).
ScoreListener = Callable[[float, "Route"], None]


@dataclass(frozen=True)
class Decision:
    """Where one request goes and why.

    ``score`` and ``threshold`` are ``None`` when no scoring took place (forced, or a fallback
    because the router was unavailable). A utility decision (K-model router) has no score; its
    ``threshold`` is the knob used, ``quality`` the chosen model's predicted quality and
    ``runner_up`` the upstream with the next best utility.
    """

    route: Route
    reason: Reason
    score: float | None = None
    threshold: float | None = None
    quality: float | None = None
    runner_up: Route | None = None

    @classmethod
    def forced(cls, route: Route) -> Decision:
        return cls(route=route, reason="forced")


@dataclass(frozen=True)
class ModelSelection:
    """The parsed ``model`` field.

    ``forced_route`` is set when the client named an upstream model (no scoring);
    ``threshold`` is the per-request threshold of ``router-<t>``, ``None`` for the server's.
    """

    model: str
    forced_route: Route | None = None
    threshold: float | None = None


def parse_model_field(
    model: str,
    *,
    edge_model: str | None = None,
    cloud_model: str | None = None,
    upstream_models: Mapping[str, Route] | None = None,
) -> ModelSelection:
    """Parse the request's ``model`` field; see the module docstring for the accepted forms.

    ``upstream_models`` maps each configured model name to its upstream (any number of them);
    without it, ``edge_model`` and ``cloud_model`` are the two.

    Raises
    ------
    InvalidRequest
        ``router-<t>`` with ``t`` not a plain decimal in [0, 1] (code ``invalid_threshold``).
    ModelNotFound
        Any other name.
    """
    if upstream_models is None:
        upstream_models = {
            name: route
            for name, route in ((edge_model, "edge"), (cloud_model, "cloud"))
            if name is not None
        }
    if model == ROUTER_MODEL:
        return ModelSelection(model=model)
    if model in upstream_models:
        return ModelSelection(model=model, forced_route=upstream_models[model])
    if model.startswith(_THRESHOLD_PREFIX):
        text = model[len(_THRESHOLD_PREFIX) :]
        if _DECIMAL.fullmatch(text) is None or not 0.0 <= float(text) <= 1.0:
            # One message for every bad form: router-1.5, router--0.1, router-abc.
            raise InvalidRequest(
                f"threshold must be a number in [0, 1], got {text!r} in model {model!r}; "
                "use router-<t>, e.g. router-0.35",
                param="model",
                code="invalid_threshold",
            )
        return ModelSelection(model=model, threshold=float(text))
    names = [repr(name) for name in upstream_models]
    choices = ", ".join(names[:-1]) + f" or {names[-1]}" if names else ""
    raise ModelNotFound(
        f"model {model!r} does not exist; use {ROUTER_MODEL!r}, 'router-<threshold>', {choices}",
        param="model",
    )


def check_threshold(value: object, *, param: str = "threshold") -> float:
    """``value`` as a float if it is a finite number in [0, 1], else ``InvalidRequest``."""
    return _unit_interval(value, name="threshold", param=param, code="invalid_threshold")


def _unit_interval(value: object, *, name: str, param: str, code: str) -> float:
    number = (
        float(value) if isinstance(value, numbers.Real) and not isinstance(value, bool) else None
    )
    if number is None or not (math.isfinite(number) and 0.0 <= number <= 1.0):
        raise InvalidRequest(
            f"{name} must be a number in [0, 1], got {value!r}", param=param, code=code
        )
    return number


def decide(score: float, threshold: float) -> Decision:
    """Cloud when ``score >= threshold``, else edge; the one place the comparison is made.

    ``threshold`` is the minimum probability that the cloud is needed for which we pay for the
    cloud: 0 sends all traffic to the cloud, 1 all to the edge unless the score is exactly 1.
    """
    route: Route = "cloud" if score >= threshold else "edge"
    return Decision(route=route, reason="threshold", score=score, threshold=threshold)


@dataclass(frozen=True)
class ThresholdSnapshot:
    """The threshold with its source, as replicas exchange it (``app.shared``).

    ``calibrated_share`` is the cloud share a ``calibrated`` threshold was computed for, and
    ``calibrated_spend`` the spend (USD per 1k requests) when the operator asked for a spend.
    """

    value: float
    source: ThresholdSource
    calibrated_share: float | None = None
    calibrated_spend: float | None = None


class ThresholdState:
    """The server's threshold and a rolling window of recent live scores; thread-safe.

    Call :meth:`record` for every scored request (not for forced ones); the window feeds
    ``dars_cloud_share`` and :meth:`calibrate`.

    The threshold remembers where it came from (``source``), which decides what a router
    reload does to it (:meth:`follow_router`): a ``default`` one follows the new file's
    ``dars.default_threshold``; an ``operator`` one (``PUT``, ``DARS_THRESHOLD``) is kept, since
    the operator chose that number; a ``calibrated`` one is recalibrated to the same cloud share
    with the new file's calibration, since the old router's scores say nothing about the new
    one's. The window always restarts on reload, for the same reason.
    """

    def __init__(
        self,
        threshold: float,
        *,
        window: int = 1000,
        metrics: Metrics | None = None,
        source: ThresholdSource = "operator",
        value_gauge: Gauge | None = None,
    ):
        if window < 1:
            raise ValueError("window must be >= 1")
        self._lock = threading.Lock()
        self._metrics = metrics
        # Where the value shows when not dars_threshold (the cascade's entropy threshold): set
        # on every change, a replica's through Redis included.
        self._value_gauge = value_gauge
        self._scores: deque[float] = deque(maxlen=window)
        self._routes: deque[bool] = deque(maxlen=window)  # True = cloud
        self._cloud = 0
        self._threshold = 0.0
        self._source: ThresholdSource = source
        self._calibrated_share: float | None = None
        self._calibrated_spend: float | None = None
        self._listeners: list[ScoreListener] = []
        self._set(threshold, source)

    @classmethod
    def from_settings(
        cls, settings: Settings, *, default_threshold: float, metrics: Metrics | None = None
    ) -> ThresholdState:
        """``DARS_THRESHOLD`` when set (an operator's), else the router file's default."""
        window = settings.calibration_window
        if settings.threshold is not None:
            return cls(settings.threshold, window=window, metrics=metrics, source="operator")
        return cls(default_threshold, window=window, metrics=metrics, source="default")

    @property
    def source(self) -> ThresholdSource:
        """Where the threshold came from: ``default``, ``operator`` or ``calibrated``."""
        with self._lock:
            return self._source

    @property
    def window(self) -> int:
        return self._scores.maxlen or 0

    def get(self) -> float:
        with self._lock:
            return self._threshold

    def set(self, threshold: float) -> float:
        """Set an operator's threshold; ``InvalidRequest`` unless it is a number in [0, 1]."""
        return self._set(threshold, "operator")

    def snapshot(self) -> ThresholdSnapshot:
        """The threshold, its source and calibrated share, read together."""
        with self._lock:
            return ThresholdSnapshot(
                self._threshold, self._source, self._calibrated_share, self._calibrated_spend
            )

    def apply(self, snapshot: ThresholdSnapshot) -> float:
        """Take another replica's threshold as it is (value, source and calibrated share)."""
        return self._set(
            snapshot.value, snapshot.source, snapshot.calibrated_share, snapshot.calibrated_spend
        )

    def add_score_listener(self, listener: ScoreListener) -> None:
        """Have ``listener`` called with every :meth:`record`ed score (must not block)."""
        self._listeners.append(listener)

    def _set(
        self,
        threshold: float,
        source: ThresholdSource,
        calibrated_share: float | None = None,
        calibrated_spend: float | None = None,
    ) -> float:
        value = check_threshold(threshold)
        with self._lock:
            self._threshold = value
            self._source = source
            self._calibrated_share = calibrated_share
            self._calibrated_spend = calibrated_spend
        if self._metrics is not None:
            self._metrics.threshold.set(value)
        if self._value_gauge is not None:
            self._value_gauge.set(value)
        return value

    def follow_router(self, default_threshold: float, calibration: Calibration | None) -> float:
        """Apply the reload rule (see the class docstring) for a newly loaded router file.

        A calibrated threshold whose new file has no calibration falls back to the new default.
        A spend target (``calibrated_spend``) needs the upstreams' costs: the caller reads it
        before and recalibrates to it after (:meth:`app.deps.Services.reload_router`).
        """
        with self._lock:
            source, share = self._source, self._calibrated_share
            spend = self._calibrated_spend
            self._scores.clear()
            self._routes.clear()
            self._cloud = 0
        if self._metrics is not None:
            self._metrics.cloud_share.set(0.0)
        if source == "operator":
            return self.get()
        if source == "calibrated" and share is not None and calibration is not None:
            return self.calibrate(share, calibration, spend=spend)
        return self._set(default_threshold, "default")

    def record(self, score: float, route: Route) -> None:
        """Add one scored request to the rolling window."""
        cloud = route == "cloud"
        with self._lock:
            if len(self._routes) == self._routes.maxlen and self._routes[0]:
                self._cloud -= 1
            self._scores.append(float(score))
            self._routes.append(cloud)
            self._cloud += cloud
            share = self._cloud / len(self._routes)
        if self._metrics is not None:
            self._metrics.cloud_share.set(share)
        for listener in self._listeners:
            listener(float(score), route)

    def cloud_share(self) -> float:
        """Share of the window's requests that went to the cloud; 0.0 for an empty window."""
        with self._lock:
            return self._cloud / len(self._routes) if self._routes else 0.0

    def live_scores(self) -> np.ndarray:
        """A copy of the window's scores, oldest first."""
        with self._lock:
            return np.array(self._scores, dtype=np.float64)

    def calibrate(
        self,
        cloud_share: float,
        calibration: Calibration | None,
        *,
        scores: np.ndarray | None = None,
        spend: float | None = None,
    ) -> float:
        """Set and return the threshold that sends about ``cloud_share`` of traffic to the cloud.

        Uses the live scores when there are at least ``MIN_LIVE_SCORES``, else the router
        file's calibration quantiles. ``cloud_share`` 1 gives threshold 0 and 0 gives 1.
        ``scores``: the replicas' shared window (``app.shared``); ``None`` = this window's.
        ``spend``: the USD per 1k requests this share was derived from, kept for reloads.

        Raises
        ------
        InvalidRequest
            ``cloud_share`` outside [0, 1] (code ``invalid_cloud_share``), or too few live
            scores and no calibration in the router file (code ``calibration_unavailable``).
        """
        share = _unit_interval(
            cloud_share, name="cloud_share", param="cloud_share", code="invalid_cloud_share"
        )
        if share in (0.0, 1.0):  # no data needed: all edge or all cloud
            return self._set(1.0 - share, "calibrated", share, spend)
        if scores is None:
            scores = self.live_scores()
        if scores.size >= MIN_LIVE_SCORES:
            calibration = Calibration.from_scores(scores)
        elif calibration is None:
            raise InvalidRequest(
                f"cannot calibrate: {scores.size} live scores (need {MIN_LIVE_SCORES}) and the "
                "router file has no calibration",
                param="cloud_share",
                code="calibration_unavailable",
            )
        threshold = calibration.threshold_for_cloud_share(share)
        return self._set(min(1.0, max(0.0, threshold)), "calibrated", share, spend)
