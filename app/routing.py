"""The routing step after the embedding: score or predict quality, then decide, then record.

One place for both kinds of router file, so that routes only translate HTTP: a two-model router
(``score``) decides by the threshold (:func:`app.policy.decide`), a K-model router (``quality``,
contract v2) by utility (:mod:`app.utility`). The knob is the request's ``router-<t>`` or the
server's threshold value, the same number for both kinds (its meaning per kind is documented in
:mod:`app.policy`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from app.errors import RouterUnavailable
from app.policy import Decision, ThresholdState, decide
from app.scoring import RouterLoadError, RouterModel, Scorer

if TYPE_CHECKING:
    from app.upstreams_file import UpstreamsConfig
    from app.utility import UtilityRouter

__all__ = ["RouterParts", "RoutingParts", "check_router_fits", "decide_scored", "escalation_score"]

TWO_MODEL_ROUTES = ("edge", "cloud")


def check_router_fits(
    model: RouterModel, upstreams: UpstreamsConfig, *, gated_rung: str | None = None
) -> None:
    """Refuse a router the configured upstreams cannot serve (at start-up and on reload).

    A K-model router: every id of its ``dars.models`` must map to a configured upstream, and
    with the cascade's gate on (``gated_rung``: the ladder's bottom rung) it must predict that
    rung's quality, which the gate reads. A two-model router routes between the upstreams named
    ``edge`` and ``cloud``.

    Raises ``RouterLoadError`` saying what is missing and how to fix it.
    """
    if model.decides_by_utility:
        try:
            targets = upstreams.resolve_router_ids(model.model_ids)
        except KeyError as exc:
            raise RouterLoadError(f"{model.path}: {exc.args[0]}") from exc
        if gated_rung is not None and gated_rung not in targets:
            raise RouterLoadError(
                f"{model.path} predicts no quality for upstream {gated_rung!r}, the cascade's "
                f"bottom rung, which DARS_CASCADE_GATE reads (the router's upstreams: "
                f"{', '.join(targets)}); unset the gate or list that upstream first"
            )
        return
    missing = [name for name in TWO_MODEL_ROUTES if name not in upstreams.names]
    if missing:
        raise RouterLoadError(
            f"{model.path} is a two-model router (output 'score'): it routes between upstreams "
            f"named 'edge' and 'cloud', and {upstreams.source} has no {missing}; name two "
            "upstreams so, or load a K-model router (output 'quality')"
        )


class RoutingParts(Protocol):
    """What a routing decision reads: the loaded router, the knob and the utility
    (``app.deps.Services`` has them; so does :class:`RouterParts`, the cascade's)."""

    @property
    def scorer(self) -> Scorer: ...

    @property
    def threshold(self) -> ThresholdState: ...

    @property
    def utility(self) -> UtilityRouter | None: ...


@dataclass(frozen=True)
class RouterParts:
    """The routing parts on their own, for services built before ``Services`` exists."""

    scorer: Scorer
    threshold: ThresholdState
    utility: UtilityRouter | None


def _utility(parts: RoutingParts) -> UtilityRouter:
    if parts.utility is None:
        raise RouterUnavailable("utility routing is not set up for this K-model router")
    return parts.utility


async def decide_scored(
    parts: RoutingParts,
    knob: float | None,
    vector: np.ndarray,
    query_length: int,
    *,
    record: bool,
) -> Decision:
    """The decision for one embedded query at ``knob`` (``None``: the server's); ``record``
    adds it to the live windows (cloud share and score calibration, or spend calibration)."""
    model = parts.scorer.model
    knob = parts.threshold.get() if knob is None else knob
    if not model.decides_by_utility:
        score = await parts.scorer.score(vector, query_length=query_length)
        decision = decide(score, knob)
        if record:
            parts.threshold.record(score, decision.route)
        return decision
    utility = _utility(parts)
    quality = await parts.scorer.quality(vector, query_length=query_length)
    choice = utility.decide(quality, model.model_ids, knob)
    if record:
        utility.window.add(quality)
    return Decision(
        route=choice.upstream,
        reason="utility",
        threshold=knob,
        quality=choice.quality,
        runner_up=choice.runner_up,
    )


async def escalation_score(
    parts: RoutingParts, vector: np.ndarray, query_length: int, cheapest: str
) -> float:
    """How surely the trained router says the ``cheapest`` upstream will not do, in [0, 1].

    A two-model router's score is that already (cheapest = edge). A K-model router predicts a
    quality per model: one minus the ``cheapest`` upstream's predicted quality, so one gate
    value means "skip the cheap samples" for both kinds of router file.
    """
    model = parts.scorer.model
    if not model.decides_by_utility:
        return await parts.scorer.score(vector, query_length=query_length)
    targets = _utility(parts).targets(model.model_ids)
    if cheapest not in targets:
        raise RouterUnavailable(f"the router predicts no quality for upstream {cheapest!r}")
    quality = await parts.scorer.quality(vector, query_length=query_length)
    return float(np.clip(1.0 - quality[targets.index(cheapest)], 0.0, 1.0))
