"""The durable store of the live loop: SQLite (WAL) on one box, Redis streams across replicas.

Why these two:

- **SQLite in WAL mode** is the embedded default: one file, no server, survives restarts, and
  WAL lets readers (``dars-train live export``) run while the service writes; several
  processes on the *same* host may write the same file (``busy_timeout`` serialises them).
- **Redis** is the shared option for replicas on several hosts: the service already uses it for
  the embedding cache and the shared threshold, ``XADD`` appends are atomic from any number of
  writers, and streams keep insertion order for incremental export. Durability across a Redis
  restart is Redis' own (``appendonly yes``; README).

Both take the same calls, synchronous on purpose: the service calls them from a worker
thread (never on the event loop), the trainer calls them directly. Every write is idempotent:
a record, a feedback and a grade are keyed (request id; request id; request id, model,
sample id) and a repeated write replaces the earlier one.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from router_models.live.records import Feedback, Grade, LiveRecord

__all__ = ["LiveStore", "RedisStore", "SqliteStore", "open_store", "store_label"]


class LiveStore(Protocol):
    """Records, feedback and grades, keyed so that every write is idempotent."""

    backend: str

    def add_records(self, records: Sequence[LiveRecord]) -> None: ...
    def add_grades(self, grades: Sequence[Grade]) -> None: ...
    def has_record(self, request_id: str) -> bool: ...
    def get_record(self, request_id: str) -> LiveRecord | None: ...
    def put_feedback(self, feedback: Feedback) -> bool:
        """Store ``feedback``; True when it replaced an earlier one for the same request."""
        ...

    def records(self) -> Iterator[LiveRecord]: ...
    def feedback(self) -> Iterator[Feedback]: ...
    def grades(self) -> Iterator[Grade]: ...
    def close(self) -> None: ...


def _dump(data: dict[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, allow_nan=False)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    request_id TEXT PRIMARY KEY, ts REAL NOT NULL, route TEXT NOT NULL, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS records_ts ON records (ts);
CREATE TABLE IF NOT EXISTS feedback (
    request_id TEXT PRIMARY KEY, ts REAL NOT NULL, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS grades (
    request_id TEXT NOT NULL, model TEXT NOT NULL, sample_id INTEGER NOT NULL,
    ts REAL NOT NULL, data TEXT NOT NULL, PRIMARY KEY (request_id, model, sample_id));
"""


class SqliteStore:
    """One SQLite file in WAL mode; one connection guarded by a lock (called from threads)."""

    backend = "sqlite"

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 10.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            self.path, timeout=busy_timeout_s, check_same_thread=False, isolation_level=None
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across crashes
        with self._lock:
            self._db.executescript(_SCHEMA)

    def _write(self, sql: str, rows: Sequence[tuple[Any, ...]]) -> None:
        if not rows:
            return
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(sql, rows)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def add_records(self, records: Sequence[LiveRecord]) -> None:
        rows = [(r.request_id, r.ts, r.route, _dump(r.to_dict())) for r in records]
        self._write("INSERT OR REPLACE INTO records VALUES (?, ?, ?, ?)", rows)

    def add_grades(self, grades: Sequence[Grade]) -> None:
        rows = [(g.request_id, g.model, g.sample_id, g.ts, _dump(g.to_dict())) for g in grades]
        self._write("INSERT OR REPLACE INTO grades VALUES (?, ?, ?, ?, ?)", rows)

    def has_record(self, request_id: str) -> bool:
        return self.get_record(request_id) is not None

    def get_record(self, request_id: str) -> LiveRecord | None:
        with self._lock:
            row = self._db.execute(
                "SELECT data FROM records WHERE request_id = ?", (request_id,)
            ).fetchone()
        return None if row is None else LiveRecord.from_dict(json.loads(row[0]))

    def put_feedback(self, feedback: Feedback) -> bool:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                old = self._db.execute(
                    "SELECT 1 FROM feedback WHERE request_id = ?", (feedback.request_id,)
                ).fetchone()
                self._db.execute(
                    "INSERT OR REPLACE INTO feedback VALUES (?, ?, ?)",
                    (feedback.request_id, feedback.ts, _dump(feedback.to_dict())),
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        return old is not None

    def _rows(self, table: str) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(f"SELECT data FROM {table} ORDER BY ts").fetchall()
        return [json.loads(row[0]) for row in rows]

    def records(self) -> Iterator[LiveRecord]:
        return (LiveRecord.from_dict(d) for d in self._rows("records"))

    def feedback(self) -> Iterator[Feedback]:
        return (Feedback.from_dict(d) for d in self._rows("feedback"))

    def grades(self) -> Iterator[Grade]:
        return (Grade.from_dict(d) for d in self._rows("grades"))

    def close(self) -> None:
        with self._lock:
            self._db.close()


class RedisStore:
    """Redis: records and grades as streams (append from any replica), hashes for lookups.

    Keys (``prefix`` default ``dars:live:``): ``records`` and ``grades`` streams (field
    ``data``, JSON); ``request_ids`` hash request id -> record JSON (lookup, dedup on export);
    ``feedback`` hash request id -> feedback JSON (``HSET`` replaces: one per request).
    """

    backend = "redis"

    def __init__(self, url: str, *, prefix: str = "dars:live:", timeout_s: float = 5.0) -> None:
        import redis

        self.prefix = prefix
        self._redis = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )

    def _key(self, name: str) -> str:
        return self.prefix + name

    def add_records(self, records: Sequence[LiveRecord]) -> None:
        if not records:
            return
        pipe = self._redis.pipeline(transaction=False)
        for record in records:
            data = _dump(record.to_dict())
            pipe.hset(self._key("request_ids"), record.request_id, data)
            pipe.xadd(self._key("records"), {"data": data})
        pipe.execute()

    def add_grades(self, grades: Sequence[Grade]) -> None:
        if not grades:
            return
        pipe = self._redis.pipeline(transaction=False)
        for grade in grades:
            pipe.xadd(self._key("grades"), {"data": _dump(grade.to_dict())})
        pipe.execute()

    def has_record(self, request_id: str) -> bool:
        return bool(self._redis.hexists(self._key("request_ids"), request_id))

    def get_record(self, request_id: str) -> LiveRecord | None:
        data = self._redis.hget(self._key("request_ids"), request_id)
        return None if data is None else LiveRecord.from_dict(json.loads(data))

    def put_feedback(self, feedback: Feedback) -> bool:
        added = self._redis.hset(
            self._key("feedback"), feedback.request_id, _dump(feedback.to_dict())
        )
        return int(added) == 0  # HSET returns the number of new fields

    def _stream(self, name: str) -> Iterator[dict[str, Any]]:
        last = "-"
        while True:
            batch: Any = self._redis.xrange(self._key(name), min=last, count=1000)
            if last != "-":
                batch = batch[1:]  # XRANGE is inclusive: skip the entry already read
            if not batch:
                return
            for _entry_id, fields in batch:
                yield json.loads(fields[b"data"])
            last = batch[-1][0].decode()

    def records(self) -> Iterator[LiveRecord]:
        """Each request once (the last write wins, as in SQLite), in stream order."""
        latest: dict[str, LiveRecord] = {}
        for data in self._stream("records"):
            record = LiveRecord.from_dict(data)
            latest.pop(record.request_id, None)
            latest[record.request_id] = record
        return iter(latest.values())

    def feedback(self) -> Iterator[Feedback]:
        rows = self._redis.hgetall(self._key("feedback"))
        items = [Feedback.from_dict(json.loads(v)) for v in rows.values()]
        return iter(sorted(items, key=lambda f: f.ts))

    def grades(self) -> Iterator[Grade]:
        latest: dict[tuple[str, str, int], Grade] = {}
        for data in self._stream("grades"):
            grade = Grade.from_dict(data)
            latest[(grade.request_id, grade.model, grade.sample_id)] = grade
        return iter(latest.values())

    def close(self) -> None:
        self._redis.close()


def open_store(url: str) -> LiveStore:
    """``sqlite:///live.db`` / ``sqlite:////abs/live.db`` or a plain path -> SQLite;
    ``redis[s]://...`` -> Redis."""
    scheme = urlsplit(url).scheme
    if scheme in ("redis", "rediss", "unix"):
        return RedisStore(url)
    if scheme == "sqlite":  # SQLAlchemy's form: sqlite:///relative.db, sqlite:////abs/live.db
        path = url.removeprefix("sqlite:///")
        if path == url or not path:
            raise ValueError(f"no file in {store_label(url)}: use sqlite:///path/live.db")
        return SqliteStore(path)
    if scheme:
        raise ValueError(f"unknown store {store_label(url)}: use sqlite:///path or redis://host")
    return SqliteStore(url)


def store_label(url: str) -> str:
    """The store URL without credentials: safe to log."""
    parts = urlsplit(url)
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return parts._replace(netloc=netloc).geturl()
