"""The live loop end to end with real local models: record, shadow-sample, grade, export,
retrain, gate, promote, and a request routed by the promoted router.

SmolLM2-135M (edge) and Qwen2.5-Coder-0.5B (cloud stand-in, and the LLM judge) run under
xllamacpp on loopback behind the real app under uvicorn, a SQLite store in a temporary
directory, shadow sampling on every request, the real ``openai`` SDK as the client and
``dars-train live export / retrain`` as the operator runs them. Real prompts with gold answers
(GSM8K, NQ-open, MMLU: ``llm/live_prompts.py``), small token budgets: 25 model answers and 4
judge calls, 4 to 4.5 minutes on two cores shared with a benchmark (less on idle ones).

The serving router is a deliberately backwards one (short prompts to the cloud), the way a
pretrained router that does not know this traffic can be: Qwen is better than SmolLM2 on the
longer MMLU questions here, not on the short NQ ones. Two services, one after the other:

1. The LLM judge (Qwen grades every answer) on two NQ questions, the second streamed: grades
   land in the store (the streamed answer's too), export writes them as observations, and the
   default gate refuses: one held-out query is far below its 50.
2. The user grader (checkable answers against the gold): the default gate refuses again; a gate
   the test sets (``--min-queries 1``, the default margin, ``--resamples 0``) on a held-out
   slice with a query of each kind promotes the candidate, the service hot-reloads it, and the
   next request is decided and recorded by the promoted file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import openai
import pytest
from helpers.onnx_routers import make_linear_router
from helpers.polling import until
from integration.upstream_server import ServerThread
from llm.live_prompts import LivePrompt, live_prompt
from llm.servers import start_model_server, stop
from pydantic import SecretStr

from app.local_models import LOCAL_MODELS
from app.main import create_app
from app.settings import Settings
from router_models.cli import main
from router_models.live.records import Grade, LiveRecord, prompt_sha256
from router_models.live.state import file_sha256
from router_models.live.store import SqliteStore
from router_models.observations import Observation, read_observations
from router_models.splits import held_out

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

pytestmark = pytest.mark.llm

EDGE, CLOUD = (model.name for model in LOCAL_MODELS)
ADMIN = "admin-token-live-local"
HOLDOUT = 0.4
GEOGRAPHY = "mmlu-hendrycks-test-high_school_geography"
SHADOW_WAIT_S = 300.0  # generous: two cores shared with whatever else runs


@pytest.fixture(scope="module")
def qwen_url(
    xllamacpp_installed: None, qwen_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """Qwen2.5-Coder-0.5B on a free loopback port: the cloud stand-in and the judge."""
    server = start_model_server(qwen_file, CLOUD, tmp_path_factory.mktemp("qwen") / "log")
    try:
        yield server.url
    finally:
        stop(server.process)


@pytest.fixture(scope="module")
def backwards_router(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """score = sigmoid(8 - 0.1 * characters): under 80 characters to the cloud, longer to the
    edge. The fixture's NQ questions go to the cloud, its MMLU questions to the edge."""
    path = tmp_path_factory.mktemp("router") / "backwards.onnx"
    make_linear_router(path, length_weight=-0.1, bias=8.0, edge_model=EDGE, cloud_model=CLOUD)
    return path


def _service(
    router: Path, edge_url: str, cloud_url: str, db: Path, encoder: Any, **live: Any
) -> ServerThread:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        router_model=router,
        edge_base_url=edge_url,
        edge_model=EDGE,
        cloud_base_url=cloud_url,
        cloud_model=CLOUD,
        cloud_price_input_per_mtok=0.0,
        cloud_price_output_per_mtok=0.0,
        onnx_providers="cpu",
        onnx_threads=1,
        upstream_backoff_s=0.0,
        upstream_read_timeout_s=120.0,
        admin_token=SecretStr(ADMIN),
        live_store=SecretStr(f"sqlite:///{db}"),
        record_prompts=True,
        shadow_rate=1.0,
        shadow_temperature=0.3,
        shadow_calls_per_minute=1000,
        **live,
    )
    return ServerThread(create_app(settings, encoder=encoder), lifespan="on").start()


def _ask(client: openai.OpenAI, item: LivePrompt, *, stream: bool = False) -> str:
    """One real request through the router (streamed or not); its request id (= the live
    record's id)."""
    messages: Any = [
        {"role": "system", "content": item.system},
        {"role": "user", "content": item.prompt},
    ]
    create = client.chat.completions.with_raw_response.create
    if stream:
        raw_stream = create(
            model="router",
            messages=messages,
            max_tokens=item.max_tokens,
            temperature=0.0,
            stream=True,
        )
        text = "".join(
            chunk.choices[0].delta.content or "" for chunk in raw_stream.parse() if chunk.choices
        )
        assert raw_stream.status_code == 200 and text
        return str(raw_stream.headers["x-request-id"])
    raw = create(model="router", messages=messages, max_tokens=item.max_tokens, temperature=0.0)
    assert raw.status_code == 200 and raw.parse().choices[0].message.content is not None
    return str(raw.headers["x-request-id"])


def _counter(url: str, name: str, result: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    match = re.search(rf'^{name}\{{result="{result}"\}} (\S+)$', text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def _shadow_done(url: str, jobs: int) -> None:
    """Until the sampler finished ``jobs`` jobs (none failed or dropped)."""
    name = "dars_shadow_requests_total"

    def finished() -> float:
        return _counter(url, name, "done") + _counter(url, name, "failed")

    until(finished, lambda n: n >= jobs, SHADOW_WAIT_S, every_s=0.5)
    assert _counter(url, name, "done") == jobs, httpx.get(f"{url}/metrics").text
    assert _counter(url, name, "dropped_queue") == _counter(url, name, "dropped_budget") == 0


def _store_rows(db: Path) -> tuple[list[LiveRecord], list[Grade]]:
    store = SqliteStore(db)
    try:
        return list(store.records()), list(store.grades())
    finally:
        store.close()


def _grades_landed(db: Path, count: int) -> tuple[list[LiveRecord], list[Grade]]:
    """The store once it holds ``count`` grades (the writer batches in the background)."""
    return until(lambda: _store_rows(db), lambda rows: len(rows[1]) >= count, 30.0, every_s=0.5)


def _decisions(state: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (state / "decisions.jsonl").read_text().splitlines()]


def _export(db: Path, out: Path) -> list[Observation]:
    assert main(["live", "export", "--store", f"sqlite:///{db}", "--out", str(out)]) == 0
    return read_observations([str(out)])


def _retrain(db: Path, state: Path, serving: Path, *extra: str) -> dict[str, Any]:
    """``dars-train live retrain`` once; the last decision it logged."""
    args = ["live", "retrain", "--store", f"sqlite:///{db}", "--state-dir", str(state),
            "--serving", str(serving), "--holdout", str(HOLDOUT), *extra]  # fmt: skip
    assert main(args) == 0
    return _decisions(state)[-1]


def _split_seed(rows: Sequence[Observation], kind: Callable[[str], object]) -> int:
    """A seed whose held-out slice and training side each have a query of every ``kind``
    (of its prompt): with a kind per side of the quality gap, the gate has something to
    measure. The split itself stays the loop's (``--seed``, by query hash)."""
    prompts = {o.query_id: o.prompt or "" for o in rows}
    kinds = {kind(prompt) for prompt in prompts.values()}
    for seed in range(1000):
        sides: dict[bool, set[object]] = {True: set(), False: set()}
        for qid, prompt in prompts.items():
            sides[held_out(qid, HOLDOUT, seed)].add(kind(prompt))
        if sides[True] == sides[False] == kinds:
            return seed
    raise AssertionError("no seed splits the fixture's queries usefully")


def test_live_loop_with_the_llm_judge_grades_exports_and_refuses(
    smollm2_url: str,
    qwen_url: str,
    backwards_router: Path,
    encoder: SentenceTransformer,
    tmp_path: Path,
) -> None:
    db, state = tmp_path / "live.db", tmp_path / "loop"
    items = [live_prompt("nq-open-dev-0019"), live_prompt("nq-open-dev-0000")]  # to the cloud
    server = _service(
        backwards_router, smollm2_url, qwen_url, db, encoder,
        shadow_edge_samples=1, shadow_cloud_samples=0,
    )  # fmt: skip
    try:
        with openai.OpenAI(base_url=f"{server.url}/v1", api_key="-", max_retries=0) as client:
            # the second streamed: its served answer is graded like a JSON one
            ids = [_ask(client, item, stream=n == 1) for n, item in enumerate(items)]
        _shadow_done(server.url, len(ids))
        parsed = _counter(server.url, "dars_shadow_grades_total", "ok")
        unparsed = _counter(server.url, "dars_shadow_grades_total", "unparsed")
    finally:
        server.stop()
    # Each request: the served (cloud) answer and one edge decode, each judged once by Qwen.
    assert (parsed, unparsed) == (2 * len(ids), 0)
    records, grades = _grades_landed(db, int(parsed))
    assert [r.request_id for r in records] == ids
    assert [r.route for r in records] == ["cloud", "cloud"]  # the backwards router decided
    assert {r.router_sha256 for r in records} == {file_sha256(backwards_router)}
    assert len(grades) == parsed and {g.request_id for g in grades} == set(ids)
    assert {g.judge for g in grades} == {f"llm:{CLOUD}"}
    assert all(0.0 <= g.score <= 1.0 and g.response for g in grades)
    served = {g.request_id: g.upstream for g in grades if g.served}
    assert all(served.get(r.request_id, r.route) == r.route for r in records)
    assert [r.stream for r in records] == [False, True]
    assert served.get(ids[1]) == "cloud"  # the streamed answer, captured by the relay, graded

    rows = _export(db, tmp_path / "obs.jsonl.gz")
    assert len(rows) == len(grades)
    assert {o.prompt for o in rows} == {item.prompt for item in items}
    assert {o.meta["judge"] for o in rows} == {f"llm:{CLOUD}"}
    assert {o.model for o in rows} == {EDGE, CLOUD}

    seed = _split_seed(rows, lambda text: "any")  # one query on each side
    gate = _retrain(db, state, backwards_router, "--seed", str(seed))
    assert (gate["event"], gate["verdict"], gate["reason"]) == (
        "gate",
        "refuse",
        "too-few-queries",
    ), gate
    assert gate["n_queries"] == 1 and gate["min_queries"] == 50 and gate["n_train_queries"] == 1
    assert (gate["weak_model"], gate["strong_model"]) == (EDGE, CLOUD)
    assert not (state / "state.json").exists()


def test_live_loop_with_a_grader_promotes_and_the_promoted_router_decides(
    smollm2_url: str,
    qwen_url: str,
    backwards_router: Path,
    encoder: SentenceTransformer,
    tmp_path: Path,
) -> None:
    db, state = tmp_path / "live.db", tmp_path / "loop"
    items = [live_prompt("nq-open-dev-0000"), live_prompt("gsm8k-test-00462")]  # to the cloud
    items += [live_prompt(f"{GEOGRAPHY}-{n}") for n in ("0012", "0018", "0025")]  # to the edge
    last = live_prompt(f"{GEOGRAPHY}-0024")
    server = _service(
        backwards_router, smollm2_url, qwen_url, db, encoder,
        shadow_edge_samples=2, shadow_cloud_samples=1,
        shadow_judge="grader", shadow_grader="llm.live_prompts:grade",
    )  # fmt: skip
    try:
        with openai.OpenAI(base_url=f"{server.url}/v1", api_key="-", max_retries=0) as client:
            ids = [_ask(client, item) for item in items]
            _shadow_done(server.url, len(ids))
            records, grades = _grades_landed(db, 4 * len(ids))
            # served + 2 edge decodes + 1 cloud answer per request, each graded against the gold
            assert len(grades) == 4 * len(ids)
            assert {g.judge for g in grades} == {"grader:llm.live_prompts:grade"}
            assert {g.score for g in grades} <= {0.0, 1.0}

            rows = _export(db, tmp_path / "obs.jsonl.gz")
            assert len(rows) == len(grades) and len({o.query_id for o in rows}) == len(items)
            mmlu = {item.prompt for item in items if item.dataset == "mmlu"}
            seed = ["--seed", str(_split_seed(rows, lambda text: text in mmlu))]

            # The default gate: a handful of held-out queries is no evidence.
            refused = _retrain(db, state, backwards_router, *seed)
            assert (refused["verdict"], refused["reason"]) == ("refuse", "too-few-queries")
            assert 2 <= refused["n_queries"] < 50 and not (state / "state.json").exists()

            # The gate the test sets: any held-out slice, the default 1-point APGR margin, no
            # confidence bound (a bootstrap over a handful of queries cannot clear one).
            url = ["--url", server.url, "--admin-token", ADMIN]
            permissive = ["--min-queries", "1", "--resamples", "0", "--param", "n_neighbors=1"]
            promoted = _retrain(db, state, backwards_router, *seed, *permissive, *url)
            gate = [d for d in _decisions(state) if d["event"] == "gate"][-1]
            assert promoted["event"] == "promote", (gate, promoted)
            assert (gate["verdict"], gate["reason"]) == ("promote", "better-by-margin")
            assert gate["candidate"]["apgr"] >= gate["serving"]["apgr"] + 1.0
            assert gate["serving"]["sha256"] == file_sha256(backwards_router)
            saved = json.loads((state / "state.json").read_text())
            assert saved["previous"] == str(backwards_router) and backwards_router.is_file()
            assert promoted["reloaded"] is True and promoted["path"] == saved["serving"]

            ready = httpx.get(f"{server.url}/readyz", timeout=10).json()
            assert ready["router"]["path"] == saved["serving"]
            after = _ask(client, last)
            records, _ = until(
                lambda: _store_rows(db), lambda rows: len(rows[0]) > len(ids), 30.0, every_s=0.5
            )
    finally:
        server.stop()
    record = next(r for r in records if r.request_id == after)
    assert (record.router, record.router_sha256) == (saved["serving"], saved["serving_sha256"])
    assert record.prompt_sha256 == prompt_sha256(last.prompt)
    assert all(r.router_sha256 == file_sha256(backwards_router) for r in records if r is not record)
