"""The append-only store: durable lines, torn-line repair, skip-what-is-done, one writer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from router_models.collect.store import JsonlStore, StoreCorrupt, StoreLocked


def _key(record: dict[str, object]) -> object:
    return record["id"]


def test_add_persists_each_record_and_skips_known_keys(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    with JsonlStore(path, _key) as store:
        assert store.add({"id": 1, "v": "a"})
        assert not store.add({"id": 1, "v": "again"})
        assert store.add({"id": 2, "v": "b"})
        # Written through before close: another reader sees both lines now.
        assert [r["id"] for r in JsonlStore.read(path)] == [1, 2]
    with JsonlStore(path, _key) as store:
        assert store.done(1) and store.done(2) and not store.done(3)
        assert len(store) == 2


def test_torn_last_line_is_truncated_on_open(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    good = json.dumps({"id": 1}) + "\n" + json.dumps({"id": 2}) + "\n"
    path.write_text(good + '{"id": 3, "v": "half', encoding="utf-8")
    assert [r["id"] for r in JsonlStore.read(path)] == [1, 2]
    with JsonlStore(path, _key) as store:
        assert store.repaired_bytes == len('{"id": 3, "v": "half')
        assert not store.done(3)
        store.add({"id": 3, "v": "whole"})
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["id"] for line in lines] == [1, 2, 3]


def test_bad_line_in_the_middle_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_text('{"id": 1}\nnot json\n{"id": 2}\n', encoding="utf-8")
    with pytest.raises(StoreCorrupt, match="line 2"):
        JsonlStore(path, _key).open()


def test_second_writer_is_locked_out(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    with JsonlStore(path, _key), pytest.raises(StoreLocked):
        JsonlStore(path, _key).open()
    with JsonlStore(path, _key) as store:  # released on close
        assert len(store) == 0


def test_multi_line_record_is_rejected(tmp_path: Path) -> None:
    with JsonlStore(tmp_path / "s.jsonl", _key) as store:
        with pytest.raises(ValueError, match="single line"):
            store.add({"id": 1}, line='{"id":\n1}')
        assert not store.done(1)
