"""Group the edge model's k answers by meaning, with the trainer's own functions.

``auto`` (the default) reads the answers themselves, since a live request names no dataset:
when at least half of them state a final answer explicitly (``####``, ``\\boxed{}``, "the
answer is 18", "Answer: B"; :func:`router_models.answers.has_answer_marker`), the samples are
grouped by that extracted answer, as in the offline evaluation of GSM8K; otherwise by the cosine
similarity of their embeddings (the Confidence-Driven Router's clustering, with the encoder the
service already loads, through its batching embedder: off the event loop, batched with the
queries of other requests).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from router_models.answers import AnswerKind, has_answer_marker
from router_models.cascade import meaning_labels

__all__ = ["Embed", "Meaning", "MeaningGrouper", "MeaningMode", "explicit_answer_kind"]

MeaningMode = Literal["auto", "number", "choice", "embedding", "text"]
Method = Literal["number", "choice", "embedding", "text"]
Embed = Callable[[str], Awaitable[np.ndarray]]


@dataclass(frozen=True)
class Meaning:
    """One meaning label per sample, and how they were obtained."""

    labels: tuple[str, ...]
    method: Method


def explicit_answer_kind(texts: Sequence[str]) -> AnswerKind | None:
    """``number`` or ``choice`` when at least half of ``texts`` state such a final answer."""
    for kind in ("number", "choice"):
        marked = sum(has_answer_marker(text, kind) for text in texts)
        if texts and 2 * marked >= len(texts):
            return kind
    return None


class MeaningGrouper:
    """Meaning labels of k answers; ``embed`` is the service's (batching) text encoder."""

    def __init__(self, embed: Embed, *, mode: MeaningMode = "auto", similarity: float = 0.9):
        if not 0.0 < similarity <= 1.0:
            raise ValueError(f"similarity must be in (0, 1], got {similarity}")
        self.embed = embed
        self.mode = mode
        self.similarity = similarity

    async def group(self, texts: Sequence[str]) -> Meaning:
        """The labels of ``texts`` by the configured mode (see the module docstring)."""
        kind: AnswerKind | None
        if self.mode in ("number", "choice"):
            kind = "number" if self.mode == "number" else "choice"
        elif self.mode == "auto":
            kind = explicit_answer_kind(texts)
        else:
            kind = None
        if kind is not None:
            return Meaning(tuple(meaning_labels(texts, kind=kind)), kind)
        if self.mode == "text":
            return Meaning(tuple(meaning_labels(texts)), "text")
        vectors = await asyncio.gather(*(self.embed(text) for text in texts))
        labels = meaning_labels(embeddings=np.stack(vectors), similarity=self.similarity)
        return Meaning(tuple(labels), "embedding")
