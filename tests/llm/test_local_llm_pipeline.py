"""Real model end to end: collect -> labels -> train -> export -> route through the service.

SmolLM2-135M answers a handful of arithmetic questions (one rewrite, two decodes each), under
two names, so the trainer sees an edge/cloud pair; ``dars-train run`` makes DARS labels, a kNN
router and its ONNX file; the service then routes real requests to the real model with it.
A few minutes of CPU on two cores.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import pytest
import yaml
from integration.upstream_server import ServerThread

from app.main import create_app
from app.settings import Settings
from router_models.cli import main as dars_train
from router_models.collect import RunSummary, collect, load_config
from router_models.contract import META_LABEL_SCHEME, META_MODELS
from router_models.export_onnx import read_metadata
from router_models.observations import Observation, read_observations

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

pytestmark = pytest.mark.llm

EDGE, CLOUD = "edge-smollm2", "cloud-smollm2"
QUESTIONS = [
    ("What is 2 + 3?", "5", "train"),
    ("What is 10 - 4?", "6", "train"),
    ("What is 3 times 4?", "12", "train"),
    ("Tom has 9 apples and eats 2. How many apples are left?", "7", "train"),
    ("What is 7 + 6?", "13", "test"),
    ("Anna buys 3 pens for $2 each. How many dollars does she pay?", "6", "test"),
]


@dataclass
class Pipeline:
    summary: RunSummary
    rerun: RunSummary
    observations: list[Observation]
    onnx: Path
    url: str


@pytest.fixture(scope="module")
def pipeline(
    smollm2_url: str, encoder: SentenceTransformer, tmp_path_factory: pytest.TempPathFactory
) -> Pipeline:
    work = tmp_path_factory.mktemp("llm-pipeline")
    prompts = work / "arith.jsonl"
    prompts.write_text(
        "".join(
            json.dumps(
                {
                    "dataset": "arith",
                    "split": split,
                    "query_id": f"arith-{i}",
                    "prompt": question,
                    "answer": answer,
                    "grader": "numeric",
                }
            )
            + "\n"
            for i, (question, answer, split) in enumerate(QUESTIONS)
        ),
        encoding="utf-8",
    )
    common = {"base_url": smollm2_url, "model": "smollm2-135m-instruct", "max_concurrency": 1}
    config = load_config(
        {
            "out": str(work / "observations.jsonl"),
            "prompts": [str(prompts)],
            "models": [
                {"name": EDGE, "price_in": 0.02, "price_out": 0.04, **common},
                {"name": CLOUD, "price_in": 0.15, "price_out": 0.6, **common},
            ],
            "rewrite": {"k": 1, "model": EDGE, "max_tokens": 64},
            "sampling": {"n": 2, "temperature": 0.7, "max_tokens": 48},
        }
    )

    def embed(texts: list[str]) -> np.ndarray:
        return np.asarray(encoder.encode(texts, normalize_embeddings=True))

    summary = collect(config, embed=embed, progress=False)
    rerun = collect(config, embed=embed, progress=False)

    run_config = work / "run.yaml"
    run_config.write_text(
        yaml.safe_dump(
            {
                "seed": 0,
                "output_dir": str(work / "run"),
                "models": {"weak": EDGE, "strong": CLOUD},
                "data": {
                    "train": {"paths": [config.out], "splits": ["train"]},
                    "test": {"paths": [config.out], "splits": ["test"]},
                },
                "labels": {"scheme": "dars"},
                "router": {"kind": "knn", "params": {"n_neighbors": 2}},
                "embedding": {"cache_dir": str(work / "embeddings"), "device": "cpu"},
                "export": {"cloud_share": 0.5},
            }
        ),
        encoding="utf-8",
    )
    assert dars_train(["run", "--config", str(run_config), "--no-progress"]) == 0
    return Pipeline(
        summary=summary,
        rerun=rerun,
        observations=read_observations(config.out),
        onnx=work / "run" / "router.onnx",
        url=smollm2_url,
    )


def test_collect_writes_graded_observations_of_the_real_model(pipeline: Pipeline) -> None:
    rows = pipeline.observations
    assert pipeline.summary.failed == 0
    assert len(rows) == pipeline.summary.written >= len(QUESTIONS) * 2 * 2
    assert {r.model for r in rows} == {EDGE, CLOUD}
    for r in rows:
        assert r.response and r.meta["usage"]["completion_tokens"] > 0  # the server's count
        assert r.meta["usage"].get("estimated") is None
        assert r.score in (0.0, 1.0) and r.cost is not None and r.cost > 0
        assert r.meta["grader"]["name"] == "numeric"
    # Distinct seeds give distinct decodes: the samples of a variant are not copies.
    by_variant: dict[tuple[str, str | None, int], set[str]] = {}
    for r in rows:
        by_variant.setdefault((r.query_id, r.model, r.variant_id), set()).add(r.response or "")
    assert any(len(texts) > 1 for texts in by_variant.values())


def test_rerun_after_completion_collects_nothing(pipeline: Pipeline) -> None:
    assert pipeline.rerun.written == 0
    assert pipeline.rerun.already_done == len(pipeline.observations)


def test_trainer_exports_a_router_for_the_pair(pipeline: Pipeline) -> None:
    metadata = read_metadata(pipeline.onnx)
    assert json.loads(metadata[META_MODELS]) == {"edge": EDGE, "cloud": CLOUD}
    assert metadata[META_LABEL_SCHEME] == "dars"


@pytest.fixture(scope="module")
def service(pipeline: Pipeline, encoder: SentenceTransformer) -> Iterator[str]:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        router_model=pipeline.onnx,
        edge_base_url=pipeline.url,
        edge_model=EDGE,
        cloud_base_url=pipeline.url,
        cloud_model=CLOUD,
        onnx_providers="cpu",
        onnx_threads=1,
        embedding_device="cpu",
        upstream_read_timeout_s=120.0,
    )
    server = ServerThread(create_app(settings, encoder=encoder), lifespan="on").start()
    try:
        yield server.url
    finally:
        server.stop()


def _ask(url: str, model: str) -> httpx.Response:
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": "What is 4 + 4? Answer with a number."}],
        "max_tokens": 24,
        "temperature": 0.0,
    }
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=180.0)


def test_service_routes_a_request_to_the_real_model(service: str) -> None:
    response = _ask(service, "router")
    assert response.status_code == 200, response.text
    assert response.headers["x-dars-route"] in ("edge", "cloud")
    assert response.headers["x-dars-reason"] == "threshold"
    assert 0.0 <= float(response.headers["x-dars-score"]) <= 1.0
    body = response.json()
    assert body["choices"][0]["message"]["content"].strip()
    assert body["usage"]["completion_tokens"] > 0


def test_threshold_zero_sends_the_request_to_the_cloud(service: str) -> None:
    response = _ask(service, "router-0")
    assert response.status_code == 200, response.text
    assert response.headers["x-dars-route"] == "cloud"
