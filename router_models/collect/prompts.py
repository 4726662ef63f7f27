"""Prompt sets to collect on, and the instruction each kind of task is asked with.

A prompt set is a JSON Lines file (optionally gzipped) in the observation format with
``model``/``score``/``response`` null, like the ``prompts-*`` files of the shared data. A user's
own file may be shorter: only ``prompt`` is required; ``query_id`` defaults to a hash of the
prompt, ``dataset`` to ``custom``, ``split`` to ``test``, and any other top-level key (``answer``,
``answers``, ``grader`` ...) moves into ``meta`` where the graders look for references.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from router_models.observations import FIELDS, Observation, ObservationError

__all__ = ["DEFAULT_INSTRUCTIONS", "build_messages", "load_prompts", "prompt_row"]

# System prompts per grader kind. They are the same for every variant of a query, so the
# variants differ only in the user's wording.
DEFAULT_INSTRUCTIONS: dict[str, str] = {
    "numeric": (
        "Solve the math problem with a short calculation of at most five lines. Finish with a "
        "line of the form 'The answer is N.' where N is a number."
    ),
    "choice": (
        "Answer the multiple-choice question. Finish with 'The answer is X.' where X is the "
        "letter of the correct option."
    ),
    "short": "Answer the question with a short phrase of a few words. Do not explain.",
    "judge": "",
}


def prompt_row(row: Mapping[str, Any]) -> Observation:
    """A prompt-only observation from a full or a short row (see the module docstring)."""
    if "prompt" not in row or not isinstance(row["prompt"], str):
        raise ObservationError("a prompt row needs a string field 'prompt'")
    meta = dict(row.get("meta") or {})
    meta.update({k: v for k, v in row.items() if k not in FIELDS})
    full = {k: v for k, v in row.items() if k in FIELDS}
    digest = hashlib.sha1(row["prompt"].encode("utf-8")).hexdigest()[:12]
    full.setdefault("dataset", "custom")
    full.setdefault("split", "test")
    full.setdefault("query_id", f"{full['dataset']}-{digest}")
    full.update(model=None, score=None, response=None, cost=None, meta=meta)
    full["variant_id"], full["variant"], full["sample_id"] = 0, None, 0
    return Observation.from_dict(full)


def _rows(path: Path) -> Iterable[tuple[int, Any]]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    yield number, json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ObservationError(
                        f"invalid JSON: {exc.msg}", path=path, line=number
                    ) from exc


def load_prompts(
    path: str | Path,
    *,
    splits: Iterable[str] | None = None,
    datasets: Iterable[str] | None = None,
    limit: int | None = None,
    shuffle_seed: int | None = None,
) -> list[Observation]:
    """Prompts of one file, filtered, then the first ``limit`` (after a seeded shuffle if given).

    Query order is kept otherwise, so a partial collection run covers whole queries in order.
    """
    path = Path(path)
    keep_splits = None if splits is None else set(splits)
    keep_datasets = None if datasets is None else set(datasets)
    prompts: list[Observation] = []
    seen: set[str] = set()
    for number, row in _rows(path):
        try:
            obs = prompt_row(row)
        except ObservationError as exc:
            raise ObservationError(str(exc), path=path, line=number) from exc
        if keep_splits is not None and obs.split not in keep_splits:
            continue
        if keep_datasets is not None and obs.dataset not in keep_datasets:
            continue
        if obs.query_id in seen:
            raise ObservationError(f"duplicate query_id {obs.query_id!r}", path=path, line=number)
        seen.add(obs.query_id)
        prompts.append(obs)
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(prompts)
    return prompts[:limit] if limit is not None else prompts


def build_messages(text: str, instruction: str) -> list[dict[str, str]]:
    """Chat messages for one variant: the task's instruction as system prompt, then the query."""
    messages = [{"role": "system", "content": instruction}] if instruction else []
    messages.append({"role": "user", "content": text})
    return messages
