"""The live store (SQLite) under restart and two writing processes; export to observations."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from router_models.live.export import ExportStats, live_observations, store_observations
from router_models.live.quality import route_quality
from router_models.live.records import Feedback, Grade, LiveRecord, prompt_sha256
from router_models.live.store import SqliteStore, open_store
from router_models.observations import read_observations, write_observations


def record(
    rid: str, prompt: str | None = "What is 2+2?", route: str = "edge", **kw: object
) -> LiveRecord:
    text = prompt or "hidden"
    values: dict[str, object] = dict(
        request_id=rid,
        ts=1.0,
        route=route,
        reason="threshold",
        model=f"{route}-model",
        status="200",
        prompt_sha256=prompt_sha256(text),
        prompt=prompt,
        router_sha256="r1",
        cost_usd=0.001,
    )
    values.update(kw)
    return LiveRecord(**values)  # type: ignore[arg-type]


def grade(rid: str, upstream: str, sample: int, score: float, **kw: object) -> Grade:
    return Grade(
        request_id=rid,
        upstream=upstream,
        model=f"{upstream}-model",
        sample_id=sample,
        score=score,
        judge="test",
        ts=2.0 + sample,
        **kw,  # type: ignore[arg-type]
    )


def test_sqlite_store_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "live.db"
    store = open_store(f"sqlite:///{path}")
    store.add_records([record("a"), record("b", route="cloud")])
    store.add_grades([grade("a", "edge", 1, 0.5)])
    assert store.put_feedback(Feedback("a", 1.0, "thumbs", 3.0)) is False
    store.close()

    again = open_store(str(path))
    assert {r.request_id for r in again.records()} == {"a", "b"}
    assert [g.score for g in again.grades()] == [0.5]
    assert again.get_record("b") is not None and again.get_record("b").route == "cloud"  # type: ignore[union-attr]
    assert again.has_record("zzz") is False
    # A second verdict replaces the first: one feedback per request.
    assert again.put_feedback(Feedback("a", 0.0, "thumbs", 4.0)) is True
    assert [f.score for f in again.feedback()] == [0.0]
    again.close()


def _write_many(path: str, prefix: str, n: int) -> None:
    store = SqliteStore(path)
    for i in range(n):
        store.add_records([record(f"{prefix}-{i}")])
        store.add_grades([grade(f"{prefix}-{i}", "edge", 1, 1.0)])
    store.close()


def test_two_processes_write_one_sqlite_file_at_once(tmp_path: Path) -> None:
    path = str(tmp_path / "live.db")
    SqliteStore(path).close()  # schema and WAL mode first
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_write_many, args=(path, p, 200)) for p in ("x", "y")]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
        assert w.exitcode == 0
    store = SqliteStore(path)
    assert len(list(store.records())) == 400
    assert len(list(store.grades())) == 400
    store.close()


def test_unknown_store_scheme_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown store"):
        open_store("postgres://db/live")
    with pytest.raises(ValueError, match="no file"):
        open_store("sqlite:///")


def test_export_turns_grades_and_feedback_into_observations(tmp_path: Path) -> None:
    records = [record("a"), record("b"), record("c", prompt=None), record("d", prompt="Hi")]
    grades = [grade("a", "edge", 0, 1.0, served=True), grade("a", "cloud", 1, 0.0)]
    grades += [grade("b", "edge", 1, 0.5), grade("c", "edge", 1, 1.0), grade("x", "edge", 1, 1.0)]
    feedback = [Feedback("d", 0.0, "thumbs", 9.0)]
    stats = ExportStats()
    rows = live_observations(records, feedback, grades, stats=stats)
    # a and b ask the same prompt: one query, two edge samples numbered in time order.
    same = [o for o in rows if o.prompt == "What is 2+2?" and o.model == "edge-model"]
    assert [o.sample_id for o in same] == [0, 1]
    assert len({o.query_id for o in rows}) == 2
    assert stats.no_prompt == 1 and stats.unknown_request == 1
    assert stats.from_feedback == 1 and stats.from_judge == 3
    out = tmp_path / "obs.jsonl.gz"
    write_observations(out, rows)
    assert len(read_observations(out)) == len(rows)  # the trainer's loader accepts them


def test_route_quality_counts_served_answers_and_feedback_of_one_router() -> None:
    records = [record("a"), record("b", route="cloud"), record("c", router_sha256="r2")]
    grades = [grade("a", "edge", 0, 1.0, served=True), grade("a", "edge", 1, 0.0)]
    feedback = [Feedback("b", 0.5, "score", 1.0), Feedback("c", 0.0, "score", 1.0)]
    quality = route_quality(records, feedback, grades, router_sha256="r1")
    assert quality["edge"].mean == 1.0 and quality["edge"].count == 1  # shadow sample left out
    assert quality["cloud"].mean == 0.5


def test_store_observations_reads_a_store(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "live.db")
    store.add_records([record("a")])
    store.add_grades([grade("a", "edge", 1, 1.0)])
    assert [o.score for o in store_observations(store)] == [1.0]
    store.close()
