"""``dars-train live retrain / watch``: the gate refuses a worse candidate, promotes a better one
through the running service's hot reload, and a quality drop after it rolls it back.

Live traffic is written into a real SQLite store: long arithmetic prompts that only the cloud
model gets right, short chit-chat both get right (three edge decodes and one cloud answer per
query, graded). A length router ranks them perfectly; its mirror image ranks them backwards.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from helpers.onnx_routers import make_linear_router
from integration.upstream_server import (
    CLOUD_MODEL,
    EDGE_MODEL,
    FakeUpstream,
    router_settings,
    running_router,
)

from router_models.cli import main
from router_models.live.records import Grade, LiveRecord, prompt_sha256
from router_models.live.state import file_sha256
from router_models.live.store import SqliteStore

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

ADMIN = "admin-token-for-retrain"
NAMES = ["Alice", "Bob", "Chen", "Dana", "Emil", "Fatima", "Goro", "Hana", "Ivan", "Jun"]


def _prompts() -> list[tuple[str, bool]]:
    """(prompt, needs the cloud model): 40 long arithmetic and 40 short greeting prompts."""
    hard = [
        f"Compute {13 + i} multiplied by {47 + 3 * i}, then subtract {i * 7 + 5}, then divide "
        f"the result by {i % 5 + 2} and give the remainder. Show every intermediate step "
        "carefully and state the final integer answer on its own line."
        for i in range(40)
    ]
    easy = [f"Say hi to {NAMES[i % 10]} #{i}." for i in range(40)]
    return [(p, True) for p in hard] + [(p, False) for p in easy]


def _write_traffic(db: Path, router_sha: str) -> None:
    store = SqliteStore(db)
    records, grades = [], []
    for n, (prompt, hard) in enumerate(_prompts()):
        rid = f"req-{n}"
        records.append(
            LiveRecord(rid, float(n), "edge", "threshold", EDGE_MODEL, "200",
                       prompt_sha256(prompt), router_sha256=router_sha, prompt=prompt)
        )  # fmt: skip
        for s in range(3):
            grades.append(Grade(rid, "edge", EDGE_MODEL, s + 1, 0.0 if hard else 1.0, "t", n + s))
        grades.append(Grade(rid, "cloud", CLOUD_MODEL, 1, 1.0, "t", n + 5.0))
    store.add_records(records)
    store.add_grades(grades)
    store.close()


def _length_router(path: Path, sign: float) -> Path:
    return make_linear_router(
        path, length_weight=sign * 0.05, bias=-sign * 5.0,
        edge_model=EDGE_MODEL, cloud_model=CLOUD_MODEL,
    )  # fmt: skip


def _decisions(state: Path) -> list[dict[str, Any]]:
    lines = (state / "decisions.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def _retrain(db: Path, state: Path, serving: Path, *extra: str) -> int:
    return main([
        "live", "retrain", "--store", f"sqlite:///{db}", "--state-dir", str(state),
        "--serving", str(serving), "--min-queries", "10", "--holdout", "0.3", *extra,
    ])  # fmt: skip


def test_the_gate_refuses_a_candidate_worse_than_the_serving_router(tmp_path: Path) -> None:
    good = _length_router(tmp_path / "good.onnx", +1.0)
    _write_traffic(tmp_path / "live.db", file_sha256(good))
    # Every training query is a neighbour of every prompt: one score for all, a random router.
    worse = ("--param", "n_neighbors=1000")
    assert _retrain(tmp_path / "live.db", tmp_path / "state", good, *worse) == 0
    gate = [d for d in _decisions(tmp_path / "state") if d["event"] == "gate"][-1]
    assert gate["verdict"] == "refuse" and gate["reason"] == "not-better"
    assert gate["candidate"]["apgr"] < gate["serving"]["apgr"] - 10
    assert gate["n_queries"] >= 10 and gate["n_train_queries"] > 0
    assert gate["metric"] == "APGR" and gate["models"] == [EDGE_MODEL, CLOUD_MODEL]
    assert not (tmp_path / "state" / "state.json").exists()  # nothing promoted
    assert not (tmp_path / "state" / "routers").exists()


def test_promotion_reloads_the_service_and_a_quality_drop_rolls_it_back(
    tmp_path: Path, upstreams: tuple[FakeUpstream, FakeUpstream], encoder: SentenceTransformer
) -> None:
    backwards = _length_router(tmp_path / "backwards.onnx", -1.0)
    db, state = tmp_path / "live.db", tmp_path / "state"
    _write_traffic(db, file_sha256(backwards))
    settings = router_settings(backwards, *upstreams, admin_token=ADMIN)
    with running_router(settings, encoder) as server:
        url = ["--url", server.url, "--admin-token", ADMIN, "--min-count", "20"]
        assert _retrain(db, state, backwards, *url) == 0
        events = [d["event"] for d in _decisions(state)]
        assert events[-2:] == ["gate", "promote"], events
        gate = [d for d in _decisions(state) if d["event"] == "gate"][-1]
        assert gate["delta"] >= 1.0 and gate["candidate"]["apgr"] > gate["serving"]["apgr"]
        # The paired bootstrap bound of the gain (1000 resamples) clears 0 as well.
        assert 0 < gate["delta_lower"] <= gate["delta"] and gate["n_resamples"] == 1000
        saved = json.loads((state / "state.json").read_text())
        assert saved["previous"] == str(backwards) and Path(saved["serving"]).is_file()
        assert backwards.is_file()  # the previous file is kept

        # Live quality under the promoted router: the edge route drops from 1.0 to 0.2.
        new_sha, store = saved["serving_sha256"], SqliteStore(db)
        store.add_records([
            LiveRecord(f"new-{i}", 100.0 + i, "edge", "threshold", EDGE_MODEL, "200",
                       prompt_sha256(f"p{i}"), router_sha256=new_sha)
            for i in range(40)
        ])  # fmt: skip
        store.add_grades([
            Grade(f"req-{i + 40}", "edge", EDGE_MODEL, 0, 1.0, "t", 1.0, served=True)
            for i in range(40)
        ] + [
            Grade(f"new-{i}", "edge", EDGE_MODEL, 0, 1.0 if i % 5 == 0 else 0.0, "t", 200.0,
                  served=True)
            for i in range(40)
        ])  # fmt: skip
        store.close()
        watch = ["live", "watch", "--store", f"sqlite:///{db}", "--state-dir", str(state), *url]
        assert main(watch) == 0
        metrics = httpx.get(f"{server.url}/metrics").text
    check, rollback = _decisions(state)[-2:]
    assert check["event"] == "rollback-check" and check["rollback"] is True
    assert check["routes"][0]["drop"] == pytest.approx(0.8)
    assert rollback["event"] == "rollback" and rollback["path"] == str(backwards)
    assert json.loads((state / "state.json").read_text())["serving"] == str(backwards)
    assert 'dars_router_reloads_total{result="ok"} 2.0' in metrics
