"""Held-out split by query: a seeded hash of the query id puts each query on one side.

A data file whose rows are all one split (the bundled local dataset is all ``split: test``)
cannot train and evaluate a router without one. Splitting by *query* keeps every variant and
decode of a query on the same side, so no test query leaks into training. The side of a query
is a hash of (seed, query id), not a shuffle: it does not change when rows are reordered or
data is added, so a grown dataset never moves an old test query into training. The held-out
share is therefore about ``fraction``, not exactly it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from router_models.observations import Observation

__all__ = ["Holdout", "Side", "held_out", "query_fold", "split_by_query"]

Side = Literal["train", "test"]


def query_fold(query_id: str, n_folds: int, seed: int = 0) -> int:
    """The fold of a query: a seeded hash, stable under reordering or adding data."""
    return _digest(query_id, seed) % n_folds


def _digest(query_id: str, seed: int) -> int:
    digest = hashlib.blake2b(f"{seed}\0{query_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def held_out(query_id: str, fraction: float, seed: int = 0) -> bool:
    """Whether a query falls in the held-out share ``fraction`` under ``seed``."""
    return _digest(query_id, seed) / 2.0**64 < fraction


@dataclass(frozen=True)
class Holdout:
    """A held-out split: about ``fraction`` of the queries (by id) go to the test side.

    ``seed`` None means "the run's seed" and is resolved by the caller.
    """

    fraction: float
    seed: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.fraction < 1.0:
            raise ValueError(f"held-out fraction must be in (0, 1), got {self.fraction}")

    def keeps(self, query_id: str, side: Side, seed: int = 0) -> bool:
        """Whether a query belongs to ``side`` (``seed`` is used when ``self.seed`` is None)."""
        test = held_out(query_id, self.fraction, seed if self.seed is None else self.seed)
        return test if side == "test" else not test


def split_by_query(
    rows: Iterable[Observation], fraction: float, seed: int = 0
) -> tuple[list[Observation], list[Observation]]:
    """(train, held out): every row of a query lands on the same side."""
    train: list[Observation] = []
    test: list[Observation] = []
    for obs in rows:
        (test if held_out(obs.query_id, fraction, seed) else train).append(obs)
    return train, test
