"""Judge parsing, the shadow budget caps (USD per day, calls per minute) and the sampler."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

from app.live.budget import ShadowBudget
from app.live.judge import CallableGrader, LlmJudge, Verdict, parse_grade
from app.live.metrics import LiveMetrics
from app.live.shadow import ShadowJob, ShadowSampler
from app.live.writer import LiveWriter
from app.settings import UpstreamSettings
from app.upstream import UpstreamClient
from router_models.live.store import SqliteStore


@pytest.mark.parametrize(
    ("text", "scale", "expected"),
    [
        ("Rating: [[10]]", "1-10", 1.0),
        ("I'd give it a 7/10.", "1-10", 6 / 9),
        ('{"score": 0.25}', "0-1", 0.25),
        ("Score: 1", "1-10", 0.0),
        ("**Rating:** 4", "1-10", 3 / 9),
        ("0.9", "1-10", 0.9),  # a judge that answered on [0, 1] anyway
        ("8", "1-10", 7 / 9),
        ("Rating: [[11]]", "1-10", None),  # out of scale
        ("between 3 and 5", "1-10", None),  # which number is the rating is a guess
        ("no idea", "1-10", None),
    ],
)
def test_parse_grade(text: str, scale: str, expected: float | None) -> None:
    got = parse_grade(text, scale)  # type: ignore[arg-type]
    assert got == pytest.approx(expected) if expected is not None else got is None


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_budget_caps_usd_per_day_and_resets_at_midnight() -> None:
    clock = Clock()
    budget = ShadowBudget(0.01, 100, clock=clock)
    assert budget.can_spend()
    budget.charge(0.006)
    assert budget.can_spend()
    budget.charge(0.006)
    assert not budget.can_spend()
    clock.now += 86_400
    assert budget.can_spend() and budget.spent_today() == 0.0


def test_budget_caps_calls_per_minute() -> None:
    clock = Clock()
    budget = ShadowBudget(1.0, 2, clock=clock)
    for _ in range(2):
        assert budget.wait() == 0.0
        budget.start_call()
    assert budget.wait() == pytest.approx(60.0)
    clock.now += 30
    assert budget.wait() == pytest.approx(30.0)
    clock.now += 30
    assert budget.wait() == 0.0
    assert ShadowBudget(1.0, 0, clock=clock).wait() is None  # calls off


def _completion(content: str, tokens: int = 1_000_000) -> dict[str, object]:
    return {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": tokens, "completion_tokens": 0},
    }


def _client(name: str, price: float, seen: list[dict[str, object]]) -> UpstreamClient:
    def handler(request: httpx.Request) -> httpx.Response:
        import json

        seen.append(json.loads(request.content))
        return httpx.Response(200, json=_completion(f"answer from {name}"))

    config = UpstreamSettings(
        base_url=f"http://{name}.test/v1", model=f"{name}-model", price_input_per_mtok=price
    )
    return UpstreamClient(name, config, retries=0, transport=httpx.MockTransport(handler))  # type: ignore[arg-type]


class FixedJudge:
    name = "fixed"

    async def grade(self, prompt: str, answer: str) -> Verdict:
        return Verdict(0.75 if "edge" in answer else 0.25, cost_usd=0.0)


def _job() -> ShadowJob:
    body = {"messages": [{"role": "user", "content": "hi"}], "stream": True, "seed": 5}
    return ShadowJob("r1", "hi", body, "edge", "served edge answer", 0.0)


async def _sampler(
    tmp_path: Path, usd: float, seen: list[dict[str, object]]
) -> tuple[ShadowSampler, LiveWriter, LiveMetrics]:
    metrics = LiveMetrics(CollectorRegistry())
    writer = LiveWriter(SqliteStore(tmp_path / "live.db"), metrics)
    clients = {"edge": _client("edge", 0.0, seen), "cloud": _client("cloud", 0.01, seen)}
    sampler = ShadowSampler(
        clients,  # type: ignore[arg-type]
        FixedJudge(),
        ShadowBudget(usd, 100),
        writer,
        metrics,
        rate=1.0,
        samples={"edge": 3, "cloud": 1},
        rng=random.Random(0),
    )
    return sampler, writer, metrics


def test_shadow_samples_each_model_with_distinct_seeds_and_grades_all(tmp_path: Path) -> None:
    async def run() -> list[tuple[str, int, float, bool]]:
        seen: list[dict[str, object]] = []
        sampler, writer, _ = await _sampler(tmp_path, 1.0, seen)
        await sampler.process(_job())
        await writer.flush()
        edge_seeds = [b["seed"] for b in seen if b["model"] == "edge-model"]
        assert len(set(edge_seeds)) == 3  # distinct decodes
        assert all("stream" not in b for b in seen)  # shadow calls are plain JSON calls
        await sampler.aclose()
        return sorted((g.model, g.sample_id, g.score, g.served) for g in writer.store.grades())

    grades = asyncio.run(run())
    assert grades == [
        ("cloud-model", 1, 0.25, False),
        ("edge-model", 0, 0.75, True),
        ("edge-model", 1, 0.75, False),
        ("edge-model", 2, 0.75, False),
        ("edge-model", 3, 0.75, False),
    ]


def test_shadow_stops_when_the_usd_cap_is_spent(tmp_path: Path) -> None:
    async def run() -> tuple[int, float, bool]:
        seen: list[dict[str, object]] = []
        # cloud costs 0.01 per call (1M tokens at 0.01/Mtok), the cap is 0.005: one call, then stop
        sampler, _, metrics = await _sampler(tmp_path, 0.005, seen)
        sampler.samples = {"cloud": 3}
        from app.live.shadow import OverBudget

        with pytest.raises(OverBudget):
            await sampler.process(_job())
        spent = metrics.shadow_spend.labels(kind="answer")._value.get()
        accepted = sampler.submit(_job())  # a new job is refused outright
        await sampler.aclose()
        return len(seen), spent, accepted

    calls, spent, accepted = asyncio.run(run())
    assert calls == 1 and spent == pytest.approx(0.01) and accepted is False


def test_full_writer_queue_drops_and_counts(tmp_path: Path) -> None:
    metrics = LiveMetrics(CollectorRegistry())

    async def fill() -> tuple[bool, bool]:
        writer = LiveWriter(SqliteStore(tmp_path / "live.db"), metrics, max_queue=1)
        from router_models.live.records import LiveRecord

        rec = LiveRecord("a", 1.0, "edge", "threshold", "m", "200", "sha")
        first, second = writer.submit(rec), writer.submit(rec)
        await writer.aclose()
        return first, second

    assert asyncio.run(fill()) == (True, False)
    assert metrics.records.labels(result="dropped")._value.get() == 1
    assert metrics.records.labels(result="written")._value.get() == 1


def test_user_grader_and_llm_judge(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = tmp_path / "my_grader.py"
    module.write_text("def grade(prompt, answer):\n    return 1.0 if '4' in answer else 0.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    grader = CallableGrader("my_grader:grade")

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=_completion("Rating: [[10]]", tokens=10))

    judge = LlmJudge(
        base_url="http://judge.test/v1",
        model="j",
        price_input_per_mtok=1.0,
        transport=httpx.MockTransport(handler),
    )

    async def run() -> tuple[Verdict, Verdict, Verdict]:
        verdicts = (
            await grader.grade("2+2?", "4"),
            await grader.grade("2+2?", "5"),
            await judge.grade("2+2?", "4"),
        )
        await judge.aclose()
        return verdicts

    right, wrong, judged = asyncio.run(run())
    assert (right.score, wrong.score) == (1.0, 0.0)
    assert judged.score == 1.0 and judged.cost_usd == pytest.approx(1e-5)
    with pytest.raises(ValueError, match="module:function"):
        CallableGrader("nocolon")
