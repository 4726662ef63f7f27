"""Multi-turn routing: do MT-Bench follow-ups still score like greetings once context is added?

A follow-up such as "Rewrite your previous response. Start every sentence with the letter A."
carries no signal alone. The bundled router (``router_models/pretrained/default.onnx``) and the
real encoder score four sets of texts, each prepared by the service's own function
(:func:`router_models.query_prep.prepare_query`):

- ``turn 1``: each MT-Bench question's first turn (the reference difficulty);
- ``turn 2 alone``: the second turn under the default policy (the last user message);
- ``turn 2 + context``: the second turn under ``{"turns": 2}`` (it, then the first turn);
- ``greetings``: a dozen chit-chat messages that need no strong model.

Reported: score quantiles, the share routed to the cloud at the file's default threshold, the
AUC of each set against the greetings (P[score of a text > score of a greeting]), the cosine to
the greetings' centroid, and how far each turn-2 score lies from its conversation's turn-1 score
(mean absolute difference, Spearman correlation).

``python -m router_models.experiments.multi_turn`` (about a minute on a CPU).
"""

from __future__ import annotations

import argparse
import gzip
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from router_models.contract import META_DEFAULT_THRESHOLD
from router_models.export_onnx import load_router_scores, read_metadata
from router_models.query_prep import DEFAULT_QUERY_POLICY, QueryPolicy, Turn, prepare_query

__all__ = ["GREETINGS", "Conversation", "load_conversations", "main", "run"]

FloatArray = npt.NDArray[np.float64]

GREETINGS = (
    "hi",
    "hello",
    "hey there",
    "good morning",
    "thanks!",
    "thank you",
    "great, thanks",
    "ok",
    "cool",
    "nice",
    "bye",
    "how are you?",
)
CONTEXT_POLICY = QueryPolicy(turns=2)
_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA = _ROOT.parent / "shared" / "data" / "prompts-mtbench.jsonl.gz"
DEFAULT_ROUTER = _ROOT / "router_models" / "pretrained" / "default.onnx"


@dataclass(frozen=True)
class Conversation:
    """One MT-Bench question: its category and two user turns (answers are not in the file)."""

    category: str
    first: str
    second: str

    def turns(self) -> list[Turn]:
        """The chat a client would send for turn 2; the answer's text does not matter to a
        user-only policy, so it is left empty."""
        return [("user", self.first), ("assistant", ""), ("user", self.second)]


def load_conversations(path: Path) -> list[Conversation]:
    """Two-turn conversations of ``prompts-mtbench.jsonl.gz`` (``meta.turns``)."""
    out = []
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            meta = json.loads(line)["meta"]
            first, second = meta["turns"][:2]
            out.append(Conversation(str(meta["category"]), str(first), str(second)))
    return out


def _auc(high: FloatArray, low: FloatArray) -> float:
    """P[a score of ``high`` > a score of ``low``] (ties count half)."""
    greater = (high[:, None] > low[None, :]).mean()
    ties = (high[:, None] == low[None, :]).mean()
    return float(greater + 0.5 * ties)


def _spearman(a: FloatArray, b: FloatArray) -> float:
    """Rank correlation (no ties expected among float scores)."""
    ranks = [np.argsort(np.argsort(x)).astype(np.float64) for x in (a, b)]
    return float(np.corrcoef(ranks[0], ranks[1])[0, 1])


def _texts(conversations: Sequence[Conversation], policy: QueryPolicy) -> list[str]:
    return [prepare_query(c.turns(), policy) for c in conversations]


def run(data: Path, router: Path, cache_dir: str | None) -> dict[str, Any]:
    """Score the four sets; returns every number the report shows."""
    from router_models.experiments.common import limit_threads, make_embedder

    limit_threads(1)
    conversations = load_conversations(data)
    first_turns = [[("user", c.first)] for c in conversations]
    sets = {
        "turn 1": [prepare_query(t, DEFAULT_QUERY_POLICY) for t in first_turns],
        "turn 2 alone": _texts(conversations, DEFAULT_QUERY_POLICY),
        "turn 2 + context": _texts(conversations, CONTEXT_POLICY),
        "greetings": [prepare_query([("user", g)]) for g in GREETINGS],
    }
    embed = make_embedder(cache_dir)
    vectors = {name: embed(texts).astype(np.float64) for name, texts in sets.items()}
    scores = {
        name: load_router_scores(router, v.astype(np.float32)).astype(np.float64)
        for name, v in vectors.items()
    }
    threshold = float(read_metadata(router)[META_DEFAULT_THRESHOLD])
    centroid = vectors["greetings"].mean(axis=0)
    centroid /= np.linalg.norm(centroid)
    rows = {}
    for name, values in scores.items():
        q10, q50, q90 = np.quantile(values, [0.1, 0.5, 0.9])
        rows[name] = {
            "n": len(values),
            "mean": float(values.mean()),
            "p10": float(q10),
            "median": float(q50),
            "p90": float(q90),
            "cloud_share": float((values >= threshold).mean()),
            "auc_vs_greetings": _auc(values, scores["greetings"]),
            "cosine_to_greetings": float((vectors[name] @ centroid).mean()),
        }
    first = scores["turn 1"]
    drift = {
        name: {
            "mean_abs_diff": float(np.abs(scores[name] - first).mean()),
            "spearman": _spearman(scores[name], first),
        }
        for name in ("turn 2 alone", "turn 2 + context")
    }
    categories = sorted({c.category for c in conversations})
    by_category = {
        category: {
            name: float(
                np.mean(
                    [
                        s
                        for s, c in zip(scores[name], conversations, strict=True)
                        if c.category == category
                    ]
                )
            )
            for name in ("turn 1", "turn 2 alone", "turn 2 + context")
        }
        for category in categories
    }
    return {
        "router": str(router.relative_to(_ROOT)) if router.is_relative_to(_ROOT) else str(router),
        "threshold": threshold,
        "context_policy": json.loads(CONTEXT_POLICY.to_json()),
        "sets": rows,
        "vs_turn1": drift,
        "by_category": by_category,
    }


def render(result: dict[str, Any]) -> str:
    """The markdown report of :func:`run`'s numbers."""
    lines = [
        "# Multi-turn routing: MT-Bench follow-ups with and without context",
        "",
        "Generated by `python -m router_models.experiments.multi_turn` "
        f"(router `{result['router']}`, default threshold {result['threshold']:.3f}, "
        "encoder all-MiniLM-L6-v2; 80 MT-Bench questions, 12 greetings).",
        "",
        "Texts are prepared by `router_models.query_prep.prepare_query`, the function the "
        "service uses. *turn 2 alone* is the default policy (the last user message); "
        f"*turn 2 + context* is `{json.dumps(result['context_policy'])}` (the follow-up, then "
        "the previous user turn). AUC vs greetings = P[score > score of a greeting]; 0.5 means "
        "indistinguishable from greetings.",
        "",
        "| set | n | mean | p10 | median | p90 | cloud share | AUC vs greetings | "
        "cosine to greetings |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in result["sets"].items():
        lines.append(
            f"| {name} | {row['n']} | {row['mean']:.3f} | {row['p10']:.3f} | "
            f"{row['median']:.3f} | {row['p90']:.3f} | {row['cloud_share']:.0%} | "
            f"{row['auc_vs_greetings']:.2f} | {row['cosine_to_greetings']:.2f} |"
        )
    alone, context = result["vs_turn1"]["turn 2 alone"], result["vs_turn1"]["turn 2 + context"]
    lines += [
        "",
        "Turn 2 against turn 1 of the same conversation: mean |score difference| alone "
        f"{alone['mean_abs_diff']:.3f}, with context {context['mean_abs_diff']:.3f}; Spearman "
        f"correlation alone {alone['spearman']:.2f}, with context {context['spearman']:.2f}.",
        "",
        "Mean score by MT-Bench category:",
        "",
        "| category | turn 1 | turn 2 alone | turn 2 + context |",
        "|---|---:|---:|---:|",
    ]
    for category, means in result["by_category"].items():
        lines.append(
            f"| {category} | {means['turn 1']:.3f} | {means['turn 2 alone']:.3f} | "
            f"{means['turn 2 + context']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--router", type=Path, default=DEFAULT_ROUTER)
    parser.add_argument("--cache-dir", default=None, help="embedding cache (default: shared)")
    parser.add_argument("--out", type=Path, default=_ROOT / "router_models" / "reports")
    args = parser.parse_args(argv)
    result = run(args.data, args.router, args.cache_dir)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "multi-turn.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "multi-turn.md").write_text(render(result), encoding="utf-8")
    print(render(result))


if __name__ == "__main__":
    main()
