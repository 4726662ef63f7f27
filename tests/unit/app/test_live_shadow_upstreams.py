"""Shadow sampling over an upstream list and with meaning-preserving rewrites.

The sampler is built the way the service builds it (``LiveLoop.build`` from settings and an
upstreams file) in front of real OpenAI-compatible fakes on loopback; grades are read back
from the real SQLite store.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from integration.upstream_server import FakeUpstream, RecordedRequest, fake_upstreams
from prometheus_client import CollectorRegistry
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from app.live.budget import ShadowBudget
from app.live.loop import LiveLoop
from app.live.metrics import LiveMetrics
from app.live.shadow import ShadowJob
from app.live.shadow_config import ShadowConfigError, shadow_plan, training_model_id
from app.settings import Settings
from app.upstreams_file import configured_upstreams
from router_models.collect.rewrite import REWRITE_SYSTEM_PROMPT
from router_models.live.records import Grade

NAMES = ("small", "medium", "large")
PRICES = {"small": 0.0, "medium": 1.0, "large": 10.0}
PROMPT = "Tom has 3 apples and buys 5 more. How many apples does Tom have?"
PARAPHRASES = (
    "Tom owns 3 apples and then buys 5 more. How many apples does Tom have now?",
    "After having 3 apples and buying 5 more, how many apples does Tom have?",
)


def _yaml(urls: dict[str, str], router_ids: dict[str, str] | None = None) -> str:
    lines = ["upstreams:"]
    for name in NAMES:
        lines += [
            f"  - name: {name}",
            f"    base_url: {urls[name]}",
            f"    model: {name}-model",
            f"    price_input_per_mtok: {PRICES[name]}",
            f"    price_output_per_mtok: {PRICES[name]}",
        ]
        if router_ids and name in router_ids:
            lines.append(f"    router_id: {router_ids[name]}")
    return "\n".join(lines) + "\n"


def _settings(tmp_path: Path, urls: dict[str, str], **kw: Any) -> Settings:
    path = tmp_path / "upstreams.yaml"
    path.write_text(_yaml(urls, {"large": "large-v2"}))
    values: dict[str, Any] = {
        "upstreams_file": path,
        "live_store": f"sqlite:///{tmp_path / 'live.db'}",
        "shadow_rate": 1.0,
        "record_prompts": True,
        "upstream_read_timeout_s": 5.0,
    }
    values.update(kw)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


PLACES = {name: f"http://{name}.invalid/v1" for name in NAMES}


def test_defaults_cheapest_gets_edge_samples_dearest_judges(tmp_path: Path) -> None:
    settings = _settings(tmp_path, PLACES, shadow_edge_samples=3, shadow_cloud_samples=1)
    plan = shadow_plan(settings, configured_upstreams(settings))
    assert dict(plan.samples) == {"small": 3, "medium": 1, "large": 1}
    assert plan.judge.name == "large"
    # router_id when the file sets one, else the model name (what the two-model path writes)
    assert dict(plan.model_ids) == {
        "small": "small-model",
        "medium": "medium-model",
        "large": "large-v2",
    }


def test_named_samples_and_judge_override_the_defaults(tmp_path: Path) -> None:
    settings = _settings(
        tmp_path, PLACES, shadow_samples="medium=4, large=0", shadow_judge_upstream="medium"
    )
    plan = shadow_plan(settings, configured_upstreams(settings))
    assert dict(plan.samples) == {"small": 3, "medium": 4, "large": 0}
    assert plan.judge.name == "medium"


@pytest.mark.parametrize(
    ("setting", "value"),
    [("shadow_samples", "small=1,huge=2"), ("shadow_judge_upstream", "huge")],
)
def test_a_shadow_setting_naming_no_upstream_stops_start_up(
    tmp_path: Path, setting: str, value: str
) -> None:
    settings = _settings(tmp_path, PLACES, **{setting: value})
    with pytest.raises(ShadowConfigError, match=r"'huge'.*small, medium, large"):
        shadow_plan(settings, configured_upstreams(settings))

    async def build() -> None:
        async with AsyncExitStack() as stack:
            await LiveLoop.build(settings, LiveMetrics(CollectorRegistry()), stack)

    with pytest.raises(ShadowConfigError, match="DARS_SHADOW_"):
        asyncio.run(build())


@pytest.mark.parametrize("bad", ["small", "small=x", "small=1,small=2", "=3", "small=17"])
def test_malformed_shadow_samples_is_a_settings_error(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValidationError, match="DARS_SHADOW_SAMPLES"):
        _settings(tmp_path, PLACES, shadow_samples=bad)


def test_edge_and_cloud_shorthand_keeps_its_roles_whatever_the_prices() -> None:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        edge_base_url="http://edge.invalid/v1",
        cloud_base_url="http://cloud.invalid/v1",
        edge_price_input_per_mtok=50.0,  # dearer than the cloud: roles still go by name
        shadow_edge_samples=2,
        shadow_cloud_samples=5,
    )
    config = configured_upstreams(settings)
    plan = shadow_plan(settings, config)
    assert dict(plan.samples) == {"edge": 2, "cloud": 5}
    assert plan.judge.name == "cloud"
    assert [training_model_id(s) for s in config.upstreams] == ["edge", "gpt-4o"]


# --- the sampler against loopback upstreams


class JudgeAndRewriter(FakeUpstream):
    """One OpenAI-compatible endpoint that paraphrases (the collector's rewrite prompt, by
    seed) and grades (everything else: ``Rating: [[8]]``), as the judge's upstream does."""

    async def _chat(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append(RecordedRequest(dict(request.headers), body))
        if body["messages"][0]["content"] == REWRITE_SYSTEM_PROMPT:
            reply = PARAPHRASES[(body["seed"] - 2000) % len(PARAPHRASES)]
        else:
            reply = "Rating: [[8]]"
        payload = self._completion(body["model"])
        payload["choices"][0]["message"]["content"] = reply
        return JSONResponse(payload)


@pytest.fixture
def fakes() -> Iterator[dict[str, FakeUpstream]]:
    with fake_upstreams(NAMES) as started:
        yield started


@pytest.fixture
def judge() -> Iterator[FakeUpstream]:
    server = JudgeAndRewriter("judge").start()
    yield server
    server.stop()


def _job() -> ShadowJob:
    body = {"messages": [{"role": "user", "content": PROMPT}], "max_tokens": 64}
    return ShadowJob("r1", PROMPT, body, "small", "served small answer", 0.0)


def _run(settings: Settings, job: ShadowJob) -> tuple[list[Grade], LiveMetrics, float]:
    """Build the loop as the service does, process ``job``, and read the grades back."""

    async def run() -> tuple[list[Grade], LiveMetrics, float]:
        metrics = LiveMetrics(CollectorRegistry())
        async with AsyncExitStack() as stack:
            loop = await LiveLoop.build(settings, metrics, stack)
            assert loop.shadow is not None and loop.writer is not None
            await loop.shadow.process(job)
            await loop.writer.flush()
            assert isinstance(loop.shadow.budget, ShadowBudget)  # no Redis: this replica's
            spent = loop.shadow.budget.spent_today()
            grades = list(loop.writer.store.grades())
        return grades, metrics, spent

    return asyncio.run(run())


def test_sampler_samples_and_grades_every_configured_upstream(
    tmp_path: Path, fakes: dict[str, FakeUpstream]
) -> None:
    fakes["large"].answers = ["Rating: [[8]]"]  # large is also the default judge
    urls = {name: fake.base_url for name, fake in fakes.items()}
    settings = _settings(tmp_path, urls, shadow_samples="medium=2")
    grades, _, _ = _run(settings, _job())
    got = sorted((g.upstream, g.model, g.sample_id, g.served, g.variant_id) for g in grades)
    assert got == [
        ("large", "large-v2", 1, False, 0),
        ("medium", "medium-model", 1, False, 0),
        ("medium", "medium-model", 2, False, 0),
        ("small", "small-model", 0, True, 0),  # the served answer
        ("small", "small-model", 1, False, 0),
        ("small", "small-model", 2, False, 0),
        ("small", "small-model", 3, False, 0),
    ]
    assert {round(g.score, 6) for g in grades} == {round(7 / 9, 6)}
    # Every answer call went to its own upstream as a plain JSON call with its own seed.
    seeds = [r.body["seed"] for r in fakes["medium"].requests]
    assert seeds == [1000, 1001]
    assert [r.body["model"] for r in fakes["small"].requests] == ["small-model"] * 3
    judged = [r for r in fakes["large"].requests if "RESPONSE:" in r.body["messages"][0]["content"]]
    assert len(judged) == len(grades)


def test_rewrites_are_answered_by_each_sampled_upstream_and_judged_on_the_original(
    tmp_path: Path, fakes: dict[str, FakeUpstream], judge: FakeUpstream
) -> None:
    urls = {name: fake.base_url for name, fake in fakes.items()}
    settings = _settings(
        tmp_path,
        urls,
        shadow_samples="small=1,medium=0,large=1",
        shadow_rewrites=2,
        shadow_judge_base_url=judge.base_url,
        shadow_judge_model="judge-model",
        shadow_judge_price_input_per_mtok=1.0,
        shadow_judge_price_output_per_mtok=1.0,
    )
    grades, metrics, spent = _run(settings, _job())
    variants = sorted((g.upstream, g.variant_id, g.sample_id, g.rewrite) for g in grades)
    assert variants == [
        ("large", 0, 1, None),
        ("large", 1, 2, PARAPHRASES[0]),
        ("large", 2, 3, PARAPHRASES[1]),
        ("small", 0, 0, None),
        ("small", 0, 1, None),
        ("small", 1, 2, PARAPHRASES[0]),
        ("small", 2, 3, PARAPHRASES[1]),
    ]
    assert fakes["medium"].requests == []  # no decodes asked of it: no rewrites either
    # The upstreams answered the paraphrases, the judge saw only the original prompt.
    asked = [r.body["messages"][-1]["content"] for r in fakes["small"].requests]
    assert asked == [PROMPT, *PARAPHRASES]
    rubric = [r for r in judge.requests if r.body["messages"][0]["role"] == "user"]
    assert len(rubric) == len(grades)
    assert all(f"QUESTION:\n{PROMPT}\n" in r.body["messages"][0]["content"] for r in rubric)
    assert not any(p in r.body["messages"][0]["content"] for r in rubric for p in PARAPHRASES)
    # Both rewrite calls took a slot and were charged: 18 tokens at 1 USD / Mtok each.
    rewrites = [r for r in judge.requests if r.body["messages"][0]["role"] == "system"]
    assert len(rewrites) == 2
    rewrite_spend = metrics.shadow_spend.labels(kind="rewrite")._value.get()
    assert rewrite_spend == pytest.approx(2 * 18e-6)
    judge_spend = metrics.shadow_spend.labels(kind="judge")._value.get()
    answer_spend = metrics.shadow_spend.labels(kind="answer")._value.get()
    assert spent == pytest.approx(rewrite_spend + judge_spend + answer_spend)


def test_rewrites_stop_at_the_budget_and_grade_nothing_more(
    tmp_path: Path, fakes: dict[str, FakeUpstream], judge: FakeUpstream
) -> None:
    urls = {name: fake.base_url for name, fake in fakes.items()}
    settings = _settings(
        tmp_path,
        urls,
        shadow_samples="small=0,medium=0,large=1",
        shadow_rewrites=2,
        shadow_judge_base_url=judge.base_url,
        shadow_judge_model="judge-model",
        shadow_calls_per_minute=2,  # one decode and its grade: the rewrite waits a minute
    )
    job = ShadowJob("r1", PROMPT, _job().body, "small", None, None)

    async def run() -> None:
        async with AsyncExitStack() as stack:
            loop = await LiveLoop.build(settings, LiveMetrics(CollectorRegistry()), stack)
            assert loop.shadow is not None
            with pytest.raises(asyncio.TimeoutError):  # waits a minute for the 3rd slot
                await asyncio.wait_for(loop.shadow.process(job), timeout=2.0)

    asyncio.run(run())
    assert [r.body["messages"][0]["role"] for r in judge.requests] == ["user"]  # no rewrite
