"""Small routers score on the event loop, larger ones on a worker thread (no hop for ~12 us)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from helpers.onnx_routers import linear_scores, make_linear_router, random_unit_vectors

from app import scoring
from app.scoring import RouterModel, Scorer, load_router_model
from router_models.contract import DEFAULT_EMBEDDING_MODEL_ID

DIM = 384


def load(path: Path) -> RouterModel:
    return load_router_model(
        path,
        expected_embedding_model=DEFAULT_EMBEDDING_MODEL_ID,
        expected_dim=DIM,
        intra_op_threads=1,
    )


@pytest.fixture
def router(tmp_path: Path) -> Path:
    return make_linear_router(tmp_path / "router.onnx", weights=random_unit_vectors(1)[0], bias=0.1)


@pytest.fixture
def hops(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Functions sent to a worker thread by ``asyncio.to_thread``."""
    sent: list[Any] = []
    real = asyncio.to_thread

    async def counting(function: Any, /, *args: Any, **kwargs: Any) -> Any:
        sent.append(function)
        return await real(function, *args, **kwargs)

    monkeypatch.setattr(scoring.asyncio, "to_thread", counting)
    return sent


def test_the_size_of_the_file_decides(router: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert router.stat().st_size <= scoring.INLINE_MAX_BYTES
    assert load(router).inline
    monkeypatch.setattr(scoring, "INLINE_MAX_BYTES", router.stat().st_size - 1)
    assert not load(router).inline


@pytest.mark.parametrize("inline", [True, False])
async def test_both_paths_give_the_same_score(router: Path, hops: list[Any], inline: bool) -> None:
    model = replace(load(router), inline=inline)
    vector = random_unit_vectors(2)[1]
    score = await Scorer(model).score(vector)
    weights = random_unit_vectors(1)[0]
    expected = linear_scores(vector[None, :], weights=weights, bias=0.1)[0]
    assert score == pytest.approx(float(expected), abs=1e-6)
    assert len(hops) == (0 if inline else 1)
    assert all(getattr(f, "__self__", None) is model for f in hops)
