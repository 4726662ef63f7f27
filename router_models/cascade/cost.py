"""What a routing policy costs per query, with the cascade's k edge samples counted.

Prices are per call in any unit (the report uses cloud = 1). A router pays one edge call for
the queries it keeps and one cloud call for those it sends up. The cascade always pays its k
edge samples (it must sample to decide), plus a cloud call for each escalation; with a router
in front (``gated``), queries sent straight to the cloud skip the samples.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PriceTable", "cascade_cost", "router_cost"]


@dataclass(frozen=True)
class PriceTable:
    """Price of one edge call and one cloud call (same unit)."""

    edge: float
    cloud: float

    def __post_init__(self) -> None:
        if not (self.edge >= 0 and self.cloud >= 0):
            raise ValueError(f"prices must be non-negative numbers, got {self}")


def _share(value: float, name: str) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a share in [0, 1], got {value}")
    return value


def router_cost(cloud_share: float, prices: PriceTable) -> float:
    """Mean cost per query of a one-shot router sending ``cloud_share`` of queries up."""
    share = _share(cloud_share, "cloud_share")
    return (1.0 - share) * prices.edge + share * prices.cloud


def cascade_cost(
    k: int, cloud_share: float, prices: PriceTable, *, gated_share: float = 0.0
) -> float:
    """Mean cost per query of the cascade: k edge samples on every query it samples, plus a
    cloud call for every escalated query. ``gated_share`` of queries went straight to the
    cloud (counted inside ``cloud_share``) without being sampled."""
    if k < 1:
        raise ValueError(f"the cascade needs k >= 1 edge samples, got {k}")
    share = _share(cloud_share, "cloud_share")
    gated = _share(gated_share, "gated_share")
    if gated > share:
        raise ValueError("gated_share cannot exceed cloud_share (gated queries go to the cloud)")
    return (1.0 - gated) * k * prices.edge + share * prices.cloud
