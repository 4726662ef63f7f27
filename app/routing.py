"""The routing step after the embedding: score or predict quality, then decide, then record.

One place for both kinds of router file, so that routes only translate HTTP: a two-model router
(``score``) decides by the threshold (:func:`app.policy.decide`), a K-model router (``quality``,
contract v2) by utility (:mod:`app.utility`). The knob is the request's ``router-<t>`` or the
server's threshold value, the same number for both kinds (its meaning per kind is documented in
:mod:`app.policy`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from app.errors import RouterUnavailable
from app.policy import Decision, ModelSelection, decide
from app.scoring import RouterLoadError, RouterModel

if TYPE_CHECKING:
    from app.deps import Services
    from app.upstreams_file import UpstreamsConfig

__all__ = ["check_router_fits", "decide_scored"]

TWO_MODEL_ROUTES = ("edge", "cloud")


def check_router_fits(model: RouterModel, upstreams: UpstreamsConfig) -> None:
    """Refuse a router the configured upstreams cannot serve (at start-up and on reload).

    A K-model router: every id of its ``dars.models`` must map to a configured upstream. A
    two-model router routes between the upstreams named ``edge`` and ``cloud``.

    Raises ``RouterLoadError`` saying what is missing and how to fix it.
    """
    if model.decides_by_utility:
        try:
            upstreams.resolve_router_ids(model.model_ids)
        except KeyError as exc:
            raise RouterLoadError(f"{model.path}: {exc.args[0]}") from exc
        return
    missing = [name for name in TWO_MODEL_ROUTES if name not in upstreams.names]
    if missing:
        raise RouterLoadError(
            f"{model.path} is a two-model router (output 'score'): it routes between upstreams "
            f"named 'edge' and 'cloud', and {upstreams.source} has no {missing}; name two "
            "upstreams so, or load a K-model router (output 'quality')"
        )


async def decide_scored(
    services: Services,
    selection: ModelSelection,
    vector: np.ndarray,
    query_length: int,
    *,
    record: bool,
) -> Decision:
    """The decision for one embedded query; ``record`` adds it to the live windows
    (cloud share and score calibration, or spend calibration)."""
    model = services.scorer.model
    knob = services.threshold.get() if selection.threshold is None else selection.threshold
    if not model.decides_by_utility:
        score = await services.scorer.score(vector, query_length=query_length)
        decision = decide(score, knob)
        if record:
            services.threshold.record(score, decision.route)
        return decision
    if services.utility is None:
        raise RouterUnavailable("utility routing is not set up for this K-model router")
    quality = await services.scorer.quality(vector, query_length=query_length)
    choice = services.utility.decide(quality, model.model_ids, knob)
    if record:
        services.utility.window.add(quality)
    return Decision(
        route=choice.upstream,
        reason="utility",
        threshold=knob,
        quality=choice.quality,
        runner_up=choice.runner_up,
    )
