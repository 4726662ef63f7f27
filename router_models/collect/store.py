"""Append-only JSON Lines store that a crash or Ctrl-C cannot corrupt.

Collection runs for hours and costs money, so nothing that was paid for may be lost and
nothing may be written twice. Every record is one line, written, flushed and fsynced before
the next one starts. A process killed mid-write leaves at most one torn last line; opening the
store again truncates it, and ``done`` tells the runner what to skip. An exclusive lock keeps
two collectors from appending to the same file.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable, Hashable, Iterator
from pathlib import Path
from typing import IO, Any, Self

__all__ = ["JsonlStore", "StoreCorrupt", "StoreLocked"]


class StoreCorrupt(Exception):
    """A line other than the last one is not valid JSON: the file was not written by us."""


class StoreLocked(Exception):
    """Another process holds the store open for writing."""


def _scan(path: Path) -> tuple[list[dict[str, Any]], int]:
    """Parse every complete line; return the records and the byte length of the good prefix."""
    records: list[dict[str, Any]] = []
    good = 0
    with path.open("rb") as fh:
        data = fh.read()
    lines = data.split(b"\n")
    # The piece after the last newline is a torn write (or empty): never part of the good prefix.
    for number, raw in enumerate(lines[:-1], start=1):
        if raw.strip():
            try:
                records.append(json.loads(raw))
            except json.JSONDecodeError as exc:
                raise StoreCorrupt(f"{path}: line {number} is not JSON") from exc
        good += len(raw) + 1
    return records, good


class JsonlStore:
    """Records keyed by ``key(record)``; ``add`` appends durably, ``done`` answers "skip it?".

    Use as a context manager; ``JsonlStore.read(path)`` reads without locking or repairing.
    """

    def __init__(self, path: str | Path, key: Callable[[dict[str, Any]], Hashable]) -> None:
        self.path = Path(path)
        self.key = key
        self._fh: IO[bytes] | None = None
        self._keys: set[Hashable] = set()
        self.records: list[dict[str, Any]] = []
        self.repaired_bytes = 0

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = self.path.open("ab+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            fh.close()
            raise StoreLocked(f"{self.path} is in use by another process") from exc
        size = fh.seek(0, os.SEEK_END)
        records, good = _scan(self.path) if size else ([], 0)
        if good < size:
            fh.truncate(good)
            os.fsync(fh.fileno())
            self.repaired_bytes = size - good
        self.records = records
        self._keys = {self.key(r) for r in records}
        self._fh = fh

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()  # closing releases the lock
            self._fh = None

    def done(self, key: Hashable) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self.records)

    def add(self, record: dict[str, Any], line: str | None = None) -> bool:
        """Append ``record`` (as ``line`` when given) unless its key is stored; True if written."""
        if self._fh is None:
            raise RuntimeError("store is not open")
        key = self.key(record)
        if key in self._keys:
            return False
        text = line if line is not None else json.dumps(record, ensure_ascii=False)
        if "\n" in text:
            raise ValueError("a record must serialise to a single line")
        self._fh.write(text.encode("utf-8") + b"\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._keys.add(key)
        self.records.append(record)
        return True

    @staticmethod
    def read(path: str | Path) -> Iterator[dict[str, Any]]:
        """The complete records of a store file, ignoring a torn last line."""
        p = Path(path)
        if p.exists():
            yield from _scan(p)[0]
