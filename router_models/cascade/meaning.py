"""Meaning classes of k sampled answers: one label per sample, equal labels mean the same thing.

Two answers mean the same when their extracted final answers are equal (a number or an option
letter, :mod:`router_models.answers`), else when their embeddings are close (greedy clustering
at a cosine threshold, the Confidence-Driven Router's scheme with an embedding instead of NLI),
else when their whitespace-normalised texts are equal. Pure: numpy and the stdlib only, so the
service can run it per request and the trainer per observation with the same result.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

from router_models.answers import AnswerKind, extract_answer, normalize_number

__all__ = [
    "answer_labels",
    "embedding_labels",
    "extracted_answers",
    "greedy_clusters",
    "meaning_labels",
    "text_labels",
]


def greedy_clusters(n: int, same: Callable[[int, int], bool]) -> list[int]:
    """Cluster ids of ``n`` items: an item joins the first cluster whose representative (first
    member) it is equivalent to, else starts a new one (Kuhn et al.; O(n * clusters) checks)."""
    representatives: list[int] = []
    labels: list[int] = []
    for i in range(n):
        for cluster, rep in enumerate(representatives):
            if same(i, rep):
                labels.append(cluster)
                break
        else:
            labels.append(len(representatives))
            representatives.append(i)
    return labels


def extracted_answers(texts: Sequence[str | None], kind: AnswerKind) -> list[str | None]:
    """The final answer of each text (None where none can be read)."""
    return [extract_answer(text, kind) for text in texts]


def answer_labels(answers: Sequence[str | None], *, numeric: bool = False) -> list[str]:
    """One class per distinct answer; a missing answer is a class of its own (it agrees with
    nothing, so unreadable samples raise the entropy). ``numeric`` compares numbers after
    normalising (``18.0`` == ``$18``)."""
    labels = []
    for i, answer in enumerate(answers):
        value = normalize_number(answer) if numeric and answer is not None else answer
        labels.append(f"answer:{value}" if value is not None else f"unparsed:{i}")
    return labels


def embedding_labels(vectors: npt.ArrayLike, similarity: float = 0.9) -> list[str]:
    """Greedy clusters of embedding rows at cosine similarity >= ``similarity``."""
    matrix = np.asarray(vectors, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D array, got shape {matrix.shape}")
    matrix = matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
    sims = matrix @ matrix.T
    clusters = greedy_clusters(len(matrix), lambda i, j: bool(sims[i, j] >= similarity))
    return [f"embedding:{c}" for c in clusters]


def text_labels(texts: Sequence[str]) -> list[str]:
    """Identical text after collapsing whitespace and case: the fallback without a signal."""
    return ["text:" + " ".join(t.split()).lower() for t in texts]


def meaning_labels(
    texts: Sequence[str] | None = None,
    *,
    answers: Sequence[str | None] | None = None,
    kind: AnswerKind | None = None,
    embeddings: npt.ArrayLike | None = None,
    similarity: float = 0.9,
) -> list[str]:
    """Meaning-class labels of k samples, by the strongest signal given.

    ``answers`` (already extracted, e.g. a source's parsed prediction) win; else ``kind``
    extracts them from ``texts``; else ``embeddings`` (one row per sample) cluster by cosine;
    else the normalised ``texts`` themselves.
    """
    if answers is not None:
        return answer_labels(answers, numeric=kind == "number")
    if kind is not None:
        if texts is None:
            raise ValueError("an answer kind needs the sample texts to extract answers from")
        return answer_labels(extracted_answers(texts, kind))
    if embeddings is not None:
        return embedding_labels(embeddings, similarity)
    if texts is None:
        raise ValueError("give texts, answers or embeddings")
    return text_labels(texts)
