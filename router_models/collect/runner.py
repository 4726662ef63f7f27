"""The collection run: rewrite each query, sample every model on every variant, grade, store.

Queries go through a small window of workers in prompt order, so a run stopped half-way holds
complete (query, model) groups for the first queries rather than scattered calls over all of
them. Within a query every pending call starts at once; the per-endpoint limits in
:class:`~router_models.collect.client.ChatClient` decide what actually runs. A call that still
fails after its retries is counted and left for the next run; too many failures stop the run.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Hashable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from tqdm.auto import tqdm

from router_models.collect.client import ChatClient, CollectError, Completion
from router_models.collect.config import CollectConfig
from router_models.collect.grading import (
    DEFAULT_JUDGE_PROMPT,
    Grade,
    JudgeGrader,
    grade_response,
)
from router_models.collect.plan import (
    Query,
    build_queries,
    derive_seed,
    make_plan,
    observation_key,
    pending_samples,
    rewrite_key,
    variant_name,
)
from router_models.collect.prompts import build_messages
from router_models.collect.rewrite import RewriteChecker, Rewriter
from router_models.collect.store import JsonlStore
from router_models.observations import (
    Observation,
    format_observation,
    read_observations,
    write_observations,
)

__all__ = ["RunSummary", "collect", "default_embed", "dry_run", "export", "run_collect"]

log = logging.getLogger(__name__)

# Prompt-meta keys not copied into every observation (long, and the same for every row).
_DROP_META = frozenset({"solution", "turns", "reference_gpt4", "routellm_query_ids"})
MAX_RESPONSE_CHARS = 4000


@dataclass
class RunSummary:
    written: int = 0
    already_done: int = 0
    failed: int = 0
    cost: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    rewrites_accepted: int = 0
    rewrites_rejected: int = 0
    repaired_bytes: int = 0
    queries_left: int = 0
    elapsed_s: float = 0.0
    errors: list[str] = field(default_factory=list)

    def format(self) -> str:
        return (
            f"written {self.written}, already done {self.already_done}, failed {self.failed}; "
            f"rewrites accepted {self.rewrites_accepted}, rejected {self.rewrites_rejected}; "
            f"tokens {self.prompt_tokens:,} in / {self.completion_tokens:,} out; "
            f"cost ${self.cost:.4f}; {self.elapsed_s:.0f} s"
            + (
                f"; time budget used up, {self.queries_left} queries left"
                if self.queries_left
                else ""
            )
        )


def default_embed() -> Callable[[list[str]], np.ndarray]:
    """Embeddings from the project's encoder (loaded on first use, on the CPU)."""
    from router_models.contract import load_encoder

    encoder = load_encoder(device="cpu")

    def embed(texts: list[str]) -> np.ndarray:
        return np.asarray(encoder.encode(texts, normalize_embeddings=True, show_progress_bar=False))

    return embed


def _reference(meta: Mapping[str, Any]) -> str | None:
    ref = meta.get("reference") or meta.get("answer") or meta.get("answers")
    if isinstance(ref, list):
        ref = ref[0] if ref else None
    return None if ref is None else str(ref)


class _Run:
    """State of one run: stores, clients, progress; one method per step of a query."""

    def __init__(
        self,
        config: CollectConfig,
        observations: JsonlStore,
        rewrites: JsonlStore,
        clients: Mapping[str, ChatClient],
        rewriter: Rewriter | None,
        judge: JudgeGrader | None,
        bar: Any,
        summary: RunSummary,
    ) -> None:
        self.config = config
        self.observations = observations
        self.rewrites = rewrites
        self.rewrite_records = {rewrite_key(r): r for r in rewrites.records}
        self.clients = clients
        self.rewriter = rewriter
        self.judge = judge
        self.bar = bar
        self.summary = summary
        self.models = [m.name for m in config.models]

    def _count(self, completion_cost: float, prompt_tokens: int, completion_tokens: int) -> None:
        self.summary.cost += completion_cost
        self.summary.prompt_tokens += prompt_tokens
        self.summary.completion_tokens += completion_tokens

    def _fail(self, what: str, exc: Exception) -> None:
        self.summary.failed += 1
        message = f"{what}: {exc}"
        self.summary.errors.append(message)
        log.warning("collect: %s", message)
        self.bar.set_postfix_str(f"${self.summary.cost:.4f} failed={self.summary.failed}")
        if self.summary.failed > self.config.max_failures:
            raise CollectError(
                f"more than {self.config.max_failures} failed calls; last: {message}"
            ) from exc

    async def query(self, q: Query) -> None:
        try:
            variants = await self._variants(q)
        except CollectError as exc:
            self._fail(f"rewrite {q.prompt.query_id}", exc)
            return
        todo = pending_samples(q, len(variants), self.models, self.config.sampling.n, self.done)
        await asyncio.gather(*(self._sample(q, variants, m, v, s) for m, v, s in todo))

    def done(self, key: Hashable) -> bool:
        return self.observations.done(key)

    async def _variants(self, q: Query) -> list[str]:
        k = self.config.rewrite.k
        p = q.prompt
        record = self.rewrite_records.get((p.dataset, p.query_id))
        if record is None and k and self.rewriter is not None:
            seed = self.config.seed
            result = await self.rewriter.rewrite(
                p.prompt, seeds=lambda i: derive_seed(seed, "rewrite", p.dataset, p.query_id, i)
            )
            self._count(result.cost, result.prompt_tokens, result.completion_tokens)
            record = {
                "dataset": p.dataset,
                "query_id": p.query_id,
                "accepted": result.accepted,
                "rejected": result.rejected,
                "usage": {
                    "prompt_tokens": result.prompt_tokens,
                    "completion_tokens": result.completion_tokens,
                },
                "cost": result.cost,
            }
            self.rewrites.add(record)
            self.rewrite_records[(p.dataset, p.query_id)] = record
            self.summary.rewrites_accepted += len(result.accepted)
            self.summary.rewrites_rejected += len(result.rejected)
            missing = k - len(result.accepted)
            if missing:  # the bar assumed k rewrites for this query
                self.bar.total -= missing * len(self.models) * self.config.sampling.n
                self.bar.refresh()
        accepted = list(record["accepted"])[:k] if record is not None else []
        return [p.prompt, *accepted]

    async def _grade(self, q: Query, text: str, response: str, seed: int) -> tuple[Grade, Any]:
        if q.grader != "judge":
            return grade_response(
                q.grader, response, q.prompt.meta, short_mode=self.config.short_mode
            ), None
        if self.judge is None:
            raise CollectError("a prompt needs the judge grader but the config has no judge")
        grade, usage, cost = await self.judge.grade(text, response, _reference(q.prompt.meta), seed)
        self._count(cost, usage.prompt_tokens, usage.completion_tokens)
        return grade, {"usage": usage.as_dict(), "cost": cost}

    async def _sample(self, q: Query, variants: list[str], model: str, v: int, s: int) -> None:
        p = q.prompt
        seed = derive_seed(self.config.seed, "sample", p.dataset, p.query_id, model, v, s)
        try:
            completion = await self.clients[model].chat(
                build_messages(variants[v], q.instruction),
                temperature=self.config.sampling.temperature,
                max_tokens=q.max_tokens,
                seed=seed,
            )
            self._count(
                completion.cost, completion.usage.prompt_tokens, completion.usage.completion_tokens
            )
            grade, judged = await self._grade(q, variants[v], completion.text, seed)
        except CollectError as exc:
            self._fail(f"{model} on {p.query_id} v{v} s{s}", exc)
            return
        obs = self._observation(q, variants[v], model, v, s, seed, completion, grade, judged)
        self.observations.add(obs.to_dict(), format_observation(obs).rstrip("\n"))
        self.summary.written += 1
        self.bar.update(1)
        self.bar.set_postfix_str(f"${self.summary.cost:.4f} failed={self.summary.failed}")

    def _observation(
        self,
        q: Query,
        text: str,
        model: str,
        v: int,
        s: int,
        seed: int,
        completion: Completion,
        grade: Grade,
        judged: Any,
    ) -> Observation:
        p = q.prompt
        meta = {k: val for k, val in p.meta.items() if k not in _DROP_META}
        meta.update(
            usage=completion.usage.as_dict(),
            grader=grade.as_meta(),
            temperature=self.config.sampling.temperature,
            max_tokens=q.max_tokens,
            seed=seed,
            finish_reason=completion.finish_reason,
            latency_s=completion.latency_s,
        )
        if v:
            meta["variant_text"] = text
        if judged is not None:
            meta["judge"] = judged
        return Observation(
            dataset=p.dataset,
            split=p.split,
            query_id=p.query_id,
            prompt=p.prompt,
            model=model,
            score=grade.score,
            variant_id=v,
            variant=variant_name(v),
            sample_id=s,
            response=completion.text[:MAX_RESPONSE_CHARS],
            cost=completion.cost,
            meta=meta,
        )


def _rewriter(
    config: CollectConfig,
    clients: Mapping[str, ChatClient],
    embed: Callable[[list[str]], np.ndarray] | None,
) -> Rewriter | None:
    rc = config.rewrite
    if not rc.k or rc.model is None:
        return None
    return Rewriter(
        client=clients[rc.model],
        checker=RewriteChecker(embed=embed, min_similarity=rc.min_similarity),
        k=rc.k,
        temperature=rc.temperature,
        max_tokens=rc.max_tokens,
        attempts=rc.attempts,
    )


def _judge(config: CollectConfig, clients: Mapping[str, ChatClient]) -> JudgeGrader | None:
    if config.judge is None or config.judge.model not in clients:
        return None  # no judge configured, or no query needs one
    return JudgeGrader(
        client=clients[config.judge.model],
        prompt=config.judge.prompt or DEFAULT_JUDGE_PROMPT,
        max_tokens=config.judge.max_tokens,
    )


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error a caller expects from a task group: the first leaf, collector errors first."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        exc = pending.pop(0)
        if isinstance(exc, BaseExceptionGroup):
            pending.extend(exc.exceptions)
        else:
            leaves.append(exc)
    return next((e for e in leaves if isinstance(e, CollectError)), leaves[0])


async def _worker(run: _Run, queue: asyncio.Queue[Query], deadline: float | None) -> None:
    while True:
        if deadline is not None and time.monotonic() >= deadline:
            run.summary.queries_left = queue.qsize()
            return
        try:
            q = queue.get_nowait()
        except asyncio.QueueEmpty:
            return
        await run.query(q)


async def run_collect(
    config: CollectConfig,
    *,
    embed: Callable[[list[str]], np.ndarray] | None = None,
    progress: bool = True,
    parallel_queries: int = 3,
    time_budget_s: float | None = None,
    transports: Mapping[str, httpx.AsyncBaseTransport] | None = None,
) -> RunSummary:
    """Collect everything the stores do not hold yet; safe to stop and rerun at any point.

    ``embed`` defaults to the project encoder (only loaded when rewrites are asked for);
    ``time_budget_s`` stops starting new queries after that long (queries in flight finish),
    so a budgeted run ends with complete query groups. ``transports`` maps endpoint names to
    in-process transports for tests.
    """
    started = time.monotonic()
    deadline = None if time_budget_s is None else started + time_budget_s
    queries = build_queries(config)
    summary = RunSummary()
    out = Path(config.out)
    with (
        JsonlStore(out, observation_key) as observations,
        JsonlStore(config.rewrites_path, rewrite_key) as rewrites,
    ):
        summary.repaired_bytes = observations.repaired_bytes + rewrites.repaired_bytes
        summary.already_done = len(observations)
        plan = make_plan(config, queries, observations.records, rewrites.records)
        names = {m.name for m in config.models}
        if config.rewrite.k and config.rewrite.model:
            names.add(config.rewrite.model)
        if config.judge is not None and any(q.grader == "judge" for q in queries):
            names.add(config.judge.model)
        rewriter_needed = config.rewrite.k > 0 and plan.rewrite_queries_pending > 0
        if rewriter_needed and embed is None and config.rewrite.min_similarity > 0:
            embed = await asyncio.to_thread(default_embed)
        async with AsyncExitStack() as stack:
            clients = {
                name: await stack.enter_async_context(
                    ChatClient(config.endpoint(name), transport=(transports or {}).get(name))
                )
                for name in sorted(names)
            }
            rewriter = _rewriter(config, clients, embed)
            judge = _judge(config, clients)
            with tqdm(
                total=plan.observations_pending,
                unit="obs",
                disable=not progress,
                dynamic_ncols=True,
                desc="collect",
            ) as bar:
                run = _Run(config, observations, rewrites, clients, rewriter, judge, bar, summary)
                queue: asyncio.Queue[Query] = asyncio.Queue()
                for q in queries:
                    queue.put_nowait(q)
                try:
                    async with asyncio.TaskGroup() as group:
                        for _ in range(max(1, parallel_queries)):
                            group.create_task(_worker(run, queue, deadline))
                except BaseExceptionGroup as group_error:
                    raise _first_error(group_error) from group_error
    summary.elapsed_s = time.monotonic() - started
    return summary


def collect(config: CollectConfig, **kwargs: Any) -> RunSummary:
    """Synchronous entry point of :func:`run_collect`."""
    return asyncio.run(run_collect(config, **kwargs))


def dry_run(config: CollectConfig) -> str:
    """The plan of a run, from the stores as they are now; spends nothing and locks nothing."""
    queries = build_queries(config)
    observations = list(JsonlStore.read(config.out))
    rewrites = list(JsonlStore.read(config.rewrites_path))
    return make_plan(config, queries, observations, rewrites).format()


def export(store: str | Path, path: str | Path) -> int:
    """Copy a store to a sorted, validated, reproducible ``.jsonl.gz``; returns the row count."""
    rows = read_observations(store)
    rows.sort(key=lambda o: (o.dataset, o.query_id, o.model or "", o.variant_id, o.sample_id))
    return write_observations(path, rows)
