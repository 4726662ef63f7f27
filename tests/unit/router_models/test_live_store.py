"""The live store (SQLite, Redis) under restart, two writing processes and rows from older
versions; export to observations (two and K models, prompt variants)."""

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
    values: dict[str, object] = dict(
        request_id=rid,
        upstream=upstream,
        model=f"{upstream}-model",
        sample_id=sample,
        score=score,
        judge="test",
        ts=2.0 + sample,
    )
    values.update(kw)
    return Grade(**values)  # type: ignore[arg-type]


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


def test_export_of_k_model_grades_keeps_model_ids_and_variants(tmp_path: Path) -> None:
    from router_models.labels import quality_labels
    from router_models.live.export import live_pair

    records = [record("a", route="small", model_id="small-model")]
    records.append(record("b", route="large", model="gpt-4o", model_id="large-v2"))
    grades = [grade("a", "small", 0, 1.0, served=True), grade("a", "medium", 1, 0.5)]
    grades.append(grade("a", "large", 1, 1.0, model="large-v2"))
    for upstream in ("small", "large"):  # both answered each of two rewrites once
        model = "large-v2" if upstream == "large" else f"{upstream}-model"
        grades += [
            grade("a", upstream, 1 + v, 0.0, model=model, variant_id=v, rewrite=f"p{v}")
            for v in (1, 2)
        ]
    feedback = [Feedback("b", 0.0, "thumbs", 9.0)]  # a large answer: its router_id
    rows = live_observations(records, feedback, grades)
    cells = sorted((o.model, o.variant_id, o.sample_id) for o in rows)
    assert cells == [
        ("large-v2", 0, 0),
        ("large-v2", 0, 1),  # the feedback on b: same prompt, same model id
        ("large-v2", 1, 0),
        ("large-v2", 2, 0),
        ("medium-model", 0, 0),
        ("small-model", 0, 0),
        ("small-model", 1, 0),
        ("small-model", 2, 0),
    ]
    assert {o.meta.get("rewrite") for o in rows if o.variant_id} == {"p1", "p2"}
    assert {o.prompt for o in rows} == {"What is 2+2?"}  # rewrites keep the original prompt
    out = tmp_path / "obs.jsonl.gz"
    write_observations(out, rows)
    back = read_observations(out)  # unique (query, model, variant, sample): the loader agrees
    labels = quality_labels(back, ["small-model", "medium-model", "large-v2"])
    assert labels.count.tolist() == [[3, 1, 4]]
    with pytest.raises(ValueError, match="'large': \\['large-v2'\\]"):
        live_pair(back)  # the two-model helper names what it saw instead of guessing


def _old_grade_json(rid: str) -> dict[str, object]:
    """A grade as written before ``variant_id`` existed."""
    data = grade(rid, "edge", 1, 0.5).to_dict()
    del data["variant_id"], data["rewrite"]
    return data


def test_sqlite_rows_written_without_variant_id_read_as_variant_0(tmp_path: Path) -> None:
    import json
    import sqlite3

    path = tmp_path / "live.db"
    SqliteStore(path).close()
    with sqlite3.connect(path) as db:
        db.execute(
            "INSERT INTO grades VALUES (?, ?, ?, ?, ?)",
            ("a", "edge-model", 1, 3.0, json.dumps(_old_grade_json("a"))),
        )
    store = SqliteStore(path)
    store.add_records([record("a")])
    assert [(g.variant_id, g.rewrite) for g in store.grades()] == [(0, None)]
    assert [o.variant_id for o in store_observations(store)] == [0]
    store.close()


def test_redis_rows_written_without_variant_id_read_as_variant_0(tmp_path: Path) -> None:
    import json
    import shutil

    from helpers.redis_server import RedisServer

    from router_models.live.store import RedisStore

    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer(binary, tmp_path)
    server.start()
    try:
        store = RedisStore(server.url)
        store.add_records([record("a")])
        with server.client() as raw:
            raw.xadd("dars:live:grades", {"data": json.dumps(_old_grade_json("a"))})
        assert [(g.variant_id, g.rewrite) for g in store.grades()] == [(0, None)]
        assert [o.variant_id for o in store_observations(store)] == [0]
        store.close()
    finally:
        server.stop()


def test_a_served_answer_of_unknown_cost_is_exported_without_a_cost() -> None:
    """The served answer's grade carries 0.0 when its usage was unknown (a stream without a
    usage chunk); the record says None. The export takes the record's cost, so the K-model
    gate falls back to the model's observed mean instead of counting the answer as free."""
    records = [record("a", cost_usd=None), record("b", prompt="Hi", cost_usd=0.002)]
    grades = [
        grade("a", "edge", 0, 1.0, served=True, cost_usd=0.0),
        grade("a", "edge", 1, 1.0, cost_usd=0.001),
        grade("b", "edge", 0, 1.0, served=True, cost_usd=0.002),
    ]
    rows = live_observations(records, [], grades)
    costs = sorted((o.meta["request_id"], o.meta["served"], o.cost) for o in rows)
    assert costs == [("a", False, 0.001), ("a", True, None), ("b", True, 0.002)]
