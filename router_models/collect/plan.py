"""What a collection run will do: the work list shared by the runner and ``--dry-run``.

Both the dry run and the real run enumerate pending calls with the same functions, so the
printed plan (calls, tokens, cost) is exactly the work the run would start, minus whatever the
stores say is already done.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from router_models.collect.client import Endpoint, Usage, estimate_tokens
from router_models.collect.config import CollectConfig
from router_models.collect.grading import choose_grader
from router_models.collect.prompts import DEFAULT_INSTRUCTIONS, load_prompts
from router_models.observations import Observation

__all__ = [
    "EndpointPlan",
    "Plan",
    "Query",
    "build_queries",
    "derive_seed",
    "make_plan",
    "observation_key",
    "pending_samples",
    "rewrite_key",
    "variant_name",
]


@dataclass(frozen=True)
class Query:
    """A prompt with everything needed to sample and grade it."""

    prompt: Observation
    grader: str
    instruction: str
    max_tokens: int


def build_queries(config: CollectConfig) -> list[Query]:
    """The run's queries, the prompt sources interleaved in proportion to their sizes.

    Interleaving keeps a partial run balanced: stopped at 30%, it holds about 30% of every
    source rather than all of the first one. Within a source the file order is kept.
    """
    instructions = {**DEFAULT_INSTRUCTIONS, **config.instructions}
    ranked: list[tuple[float, int, Query]] = []
    seen: set[tuple[str, str]] = set()
    for index, source in enumerate(config.prompts):
        prompts = load_prompts(
            source.path,
            splits=source.splits,
            datasets=source.datasets,
            limit=source.limit,
            shuffle_seed=source.shuffle_seed,
        )
        for position, prompt in enumerate(prompts):
            key = (prompt.dataset, prompt.query_id)
            if key in seen:
                raise ValueError(f"query {key} appears in two prompt sources")
            seen.add(key)
            grader = choose_grader(prompt, source.grader)
            max_tokens = source.max_tokens or config.sampling.max_tokens
            query = Query(prompt, grader, instructions.get(grader, ""), max_tokens)
            ranked.append(((position + 0.5) / len(prompts), index, query))
    ranked.sort(key=lambda item: (item[0], item[1]))
    return [query for _, _, query in ranked]


def derive_seed(*parts: object) -> int:
    """A stable 31-bit seed from any parts: the same decode gets the same seed on a rerun."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def observation_key(record: Mapping[str, Any]) -> Hashable:
    """The observation format's unique key (dataset, query_id, model, variant_id, sample_id)."""
    return (
        record["dataset"],
        record["query_id"],
        record["model"],
        record["variant_id"],
        record["sample_id"],
    )


def rewrite_key(record: Mapping[str, Any]) -> Hashable:
    return (record["dataset"], record["query_id"])


def variant_name(variant_id: int) -> str:
    return "original" if variant_id == 0 else f"rewrite-{variant_id}"


def pending_samples(
    query: Query,
    n_variants: int,
    models: Iterable[str],
    n: int,
    done: Callable[[Hashable], bool],
) -> list[tuple[str, int, int]]:
    """(model, variant_id, sample_id) triples of a query that the store does not hold yet."""
    p = query.prompt
    return [
        (model, v, s)
        for v in range(n_variants)
        for model in models
        for s in range(n)
        if not done((p.dataset, p.query_id, model, v, s))
    ]


@dataclass
class EndpointPlan:
    """Calls and tokens one endpoint will see; ``max`` assumes every answer hits max_tokens."""

    endpoint: Endpoint
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens_max: int = 0
    completion_tokens_expected: float = 0.0

    def add(self, prompt_tokens: int, max_tokens: int, expected: float) -> None:
        self.calls += 1
        self.prompt_tokens += prompt_tokens
        self.completion_tokens_max += max_tokens
        self.completion_tokens_expected += expected

    @property
    def cost_max(self) -> float:
        return self.endpoint.cost(Usage(self.prompt_tokens, self.completion_tokens_max))

    @property
    def cost_expected(self) -> float:
        return self.endpoint.cost(Usage(self.prompt_tokens, round(self.completion_tokens_expected)))


@dataclass
class Plan:
    queries: int
    observations_done: int
    observations_pending: int
    rewrite_queries_pending: int
    endpoints: dict[str, EndpointPlan] = field(default_factory=dict)

    @property
    def cost_expected(self) -> float:
        return sum(e.cost_expected for e in self.endpoints.values())

    @property
    def cost_max(self) -> float:
        return sum(e.cost_max for e in self.endpoints.values())

    def format(self) -> str:
        lines = [
            f"queries: {self.queries}; observations done: {self.observations_done}, "
            f"to collect: {self.observations_pending}; queries still to rewrite: "
            f"{self.rewrite_queries_pending}",
            f"{'endpoint':<28}{'calls':>8}{'in tok':>11}{'out tok (exp/max)':>22}"
            f"{'cost USD (exp/max)':>22}",
        ]
        for name, e in self.endpoints.items():
            out_tok = f"{e.completion_tokens_expected:,.0f}/{e.completion_tokens_max:,}"
            cost = f"{e.cost_expected:.4f}/{e.cost_max:.4f}"
            lines.append(f"{name:<28}{e.calls:>8,}{e.prompt_tokens:>11,}{out_tok:>22}{cost:>22}")
        lines.append(
            f"total estimated cost: ${self.cost_expected:.4f} (at most ${self.cost_max:.4f})"
        )
        return "\n".join(lines)


def _mean_completion_tokens(records: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    totals: dict[str, list[float]] = {}
    for r in records:
        usage = (r.get("meta") or {}).get("usage") or {}
        if "completion_tokens" in usage:
            totals.setdefault(r["model"], []).append(float(usage["completion_tokens"]))
    return {m: sum(v) / len(v) for m, v in totals.items()}


def make_plan(
    config: CollectConfig,
    queries: list[Query],
    observations: list[dict[str, Any]],
    rewrites: list[dict[str, Any]],
) -> Plan:
    """Count what is left to do. Unknown rewrite outcomes assume all ``k`` are accepted.

    Expected output tokens are the mean seen so far per model in the store, else half of
    ``max_tokens``; rewrites and judge replies are estimated as long as the query / response.
    """
    done = {observation_key(r) for r in observations}
    variants = {rewrite_key(r): 1 + len(r.get("accepted", ())) for r in rewrites}
    seen_mean = _mean_completion_tokens(observations)
    models = [m.name for m in config.models]
    plan = Plan(len(queries), len(done), 0, 0)
    for endpoint in (*config.models, *config.endpoints):
        plan.endpoints[endpoint.name] = EndpointPlan(endpoint)
    k = config.rewrite.k
    for q in queries:
        p = q.prompt
        n_variants = variants.get((p.dataset, p.query_id))
        text_tokens = estimate_tokens(p.prompt)
        if n_variants is None:
            n_variants = 1 + k
            if k and config.rewrite.model:
                plan.rewrite_queries_pending += 1
                rewriter = plan.endpoints[config.rewrite.model]
                for _ in range(k):
                    rewriter.add(text_tokens + 60, config.rewrite.max_tokens, text_tokens * 1.2)
        instruction_tokens = estimate_tokens(q.instruction) if q.instruction else 0
        for model, _v, _s in pending_samples(
            q, n_variants, models, config.sampling.n, done.__contains__
        ):
            plan.observations_pending += 1
            expected = seen_mean.get(model, q.max_tokens / 2)
            plan.endpoints[model].add(text_tokens + instruction_tokens + 10, q.max_tokens, expected)
            if q.grader == "judge" and config.judge is not None:
                judge = plan.endpoints[config.judge.model]
                judge.add(text_tokens + round(expected) + 200, config.judge.max_tokens, 150)
    plan.endpoints = {n: e for n, e in plan.endpoints.items() if e.calls}
    return plan
