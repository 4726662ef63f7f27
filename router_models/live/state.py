"""Which router file serves, which one it replaced, and the decision log of the live loop.

``state.json`` in the state directory keeps the serving file and the previous one (the
rollback target) with their sha256; ``decisions.jsonl`` gets one JSON line per decision with
its numbers (gate, promotion, rollback check, rollback, skipped runs). Files are replaced
atomically, so a crash never leaves half a state.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["LoopState", "file_sha256", "log_decision"]


def file_sha256(path: str | Path) -> str:
    """The file's sha256: how records name the router that decided them."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


@dataclass
class LoopState:
    """The serving router file and the one it replaced (None before the first promotion)."""

    serving: str
    serving_sha256: str
    previous: str | None = None
    previous_sha256: str | None = None
    promoted_at: float | None = None

    @classmethod
    def load(cls, state_dir: Path, serving: Path | None) -> LoopState:
        """The saved state, else a fresh one on ``serving`` (the file the service loaded)."""
        path = state_dir / "state.json"
        if path.is_file():
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        if serving is None:
            raise ValueError(f"no {path} yet: pass --serving, the router file the service loaded")
        return cls(serving=str(serving), serving_sha256=file_sha256(serving))

    def save(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        tmp = state_dir / "state.json.tmp"
        tmp.write_text(json.dumps(asdict(self), indent=2, sort_keys=True), encoding="utf-8")
        os.replace(tmp, state_dir / "state.json")

    def promoted(self, path: Path, now: float) -> LoopState:
        return LoopState(str(path), file_sha256(path), self.serving, self.serving_sha256, now)

    def rolled_back(self) -> LoopState:
        if self.previous is None or self.previous_sha256 is None:
            raise ValueError("nothing to roll back to")
        return LoopState(self.previous, self.previous_sha256)


def log_decision(state_dir: Path, event: str, **fields: Any) -> dict[str, Any]:
    """Append one decision as a JSON line (and return it); ``ts`` is the wall clock."""
    row = {"ts": time.time(), "event": event, **fields}
    state_dir.mkdir(parents=True, exist_ok=True)
    line = json.dumps(row, sort_keys=True, allow_nan=False, default=str)
    with open(state_dir / "decisions.jsonl", "a", encoding="utf-8") as handle:
        handle.write(line + "\n")
    print(line, flush=True)
    return row
