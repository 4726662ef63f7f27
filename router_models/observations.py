"""Observations: the trainer's input format, one scored outcome of one model per JSON line.

An observation is what one model scored on one query, under one prompt variant and one
decode. Files are JSON Lines, optionally gzip-compressed (``.jsonl`` / ``.jsonl.gz``); the
format is documented in ``docs/observations.md``. Reading streams the file (no pandas), checks
every row and names the file and line of the first bad one, so a user's own data either
loads or says exactly what is wrong with it. The label collector writes the same format with
:func:`format_observation` / :func:`write_observations`.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import math
import os
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypedDict, Unpack

__all__ = [
    "FIELDS",
    "SPLITS",
    "Observation",
    "ObservationError",
    "ObservationFilters",
    "PathLike",
    "format_observation",
    "group_by_query",
    "iter_observations",
    "observation_files",
    "read_observations",
    "write_observations",
]

PathLike = str | os.PathLike[str]

# Field order of a row, as written.
FIELDS: tuple[str, ...] = (
    "dataset",
    "split",
    "query_id",
    "prompt",
    "variant_id",
    "variant",
    "sample_id",
    "model",
    "score",
    "response",
    "cost",
    "meta",
)
SPLITS: tuple[str, ...] = ("train", "test", "all")
_REQUIRED: tuple[str, ...] = ("dataset", "split", "query_id", "prompt", "model", "score")
_SUFFIXES: tuple[str, ...] = (".jsonl", ".jsonl.gz")


class ObservationError(ValueError):
    """A row that does not follow the observation format; names the file and line."""

    def __init__(self, message: str, *, path: PathLike | None = None, line: int | None = None):
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + message)
        self.path = None if path is None else str(path)
        self.line = line


@dataclass(frozen=True, slots=True)
class Observation:
    """One scored outcome of ``model`` on ``query_id`` (prompt variant, decode).

    ``model`` and ``score`` are None only in prompt-only files (a query set without
    outcomes). ``score`` is in [0, 1], 1 = correct; ``cost`` is a non-negative price of the
    call in any unit that is the same across the file, or None when unknown.
    """

    dataset: str
    split: str
    query_id: str
    prompt: str
    model: str | None
    score: float | None
    variant_id: int = 0
    variant: str | None = None
    sample_id: int = 0
    response: str | None = None
    cost: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str, str | None, int, int]:
        """The unique key of a row: (dataset, query_id, model, variant_id, sample_id)."""
        return (self.dataset, self.query_id, self.model, self.variant_id, self.sample_id)

    @classmethod
    def from_dict(cls, row: Any) -> Observation:
        """Validate a parsed JSON row; raises :class:`ObservationError` without location."""
        if not isinstance(row, dict):
            raise ObservationError(f"a row must be a JSON object, got {type(row).__name__}")
        unknown = [name for name in row if name not in FIELDS]
        if unknown:
            raise ObservationError(f"unknown field(s) {unknown}; allowed: {list(FIELDS)}")
        missing = [name for name in _REQUIRED if name not in row]
        if missing:
            raise ObservationError(f"missing required field(s) {missing}")
        split = _text(row, "split")
        if split not in SPLITS:
            raise ObservationError(f"field 'split' must be one of {list(SPLITS)}, got {split!r}")
        model = _optional_text(row, "model")
        score = _number(row, "score", nullable=True)
        if score is not None and not 0.0 <= score <= 1.0:
            raise ObservationError(f"field 'score' must be within [0, 1], got {score}")
        if (model is None) != (score is None):
            raise ObservationError("fields 'model' and 'score' must be both null or both set")
        cost = _number(row, "cost", nullable=True)
        if cost is not None and cost < 0:
            raise ObservationError(f"field 'cost' must be >= 0, got {cost}")
        meta = row.get("meta", {})
        if meta is None:
            meta = {}
        if not isinstance(meta, dict):
            raise ObservationError("field 'meta' must be a JSON object")
        return cls(
            dataset=_text(row, "dataset"),
            split=split,
            query_id=_text(row, "query_id"),
            prompt=_text(row, "prompt", allow_empty=True),
            model=model,
            score=score,
            variant_id=_integer(row, "variant_id"),
            variant=_optional_text(row, "variant"),
            sample_id=_integer(row, "sample_id"),
            response=_optional_text(row, "response"),
            cost=cost,
            meta=meta,
        )

    def to_dict(self) -> dict[str, Any]:
        """The row as written, fields in :data:`FIELDS` order."""
        return {name: getattr(self, name) for name in FIELDS}


def _text(row: dict[str, Any], name: str, *, allow_empty: bool = False) -> str:
    value = row.get(name)
    if not isinstance(value, str):
        raise ObservationError(f"field {name!r} must be a string, got {_kind(value)}")
    if not value and not allow_empty:
        raise ObservationError(f"field {name!r} must not be empty")
    return value


def _optional_text(row: dict[str, Any], name: str) -> str | None:
    return None if row.get(name) is None else _text(row, name, allow_empty=True)


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _number(row: dict[str, Any], name: str, *, nullable: bool) -> float | None:
    value = row.get(name)
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ObservationError(f"field {name!r} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ObservationError(f"field {name!r} must be finite, got {value!r}")
    return float(value)


def _integer(row: dict[str, Any], name: str) -> int:
    value = row.get(name, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ObservationError(f"field {name!r} must be a non-negative integer, got {value!r}")
    return value


def observation_files(path: PathLike) -> list[Path]:
    """The observation files at ``path``: the file itself, or a directory's ``*.jsonl[.gz]``."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.name.endswith(_SUFFIXES))
        if not files:
            raise ObservationError("directory holds no *.jsonl or *.jsonl.gz file", path=path)
        return files
    if not path.exists():
        raise ObservationError("no such file", path=path)
    return [path]


def _open_read(path: Path) -> IO[str]:
    if path.name.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")


def _as_set(values: Iterable[str] | str | None) -> frozenset[str] | None:
    if values is None:
        return None
    if isinstance(values, str):
        return frozenset((values,))
    return frozenset(values)


class ObservationFilters(TypedDict, total=False):
    """The row filters of :func:`iter_observations`, passed on by :func:`read_observations`."""

    datasets: Iterable[str] | str | None
    splits: Iterable[str] | str | None
    models: Iterable[str] | str | None
    query_ids: Collection[str] | None
    exclude_flags: Iterable[str]
    scored_only: bool


def iter_observations(
    paths: PathLike | Sequence[PathLike],
    *,
    datasets: Iterable[str] | str | None = None,
    splits: Iterable[str] | str | None = None,
    models: Iterable[str] | str | None = None,
    query_ids: Collection[str] | None = None,
    exclude_flags: Iterable[str] = (),
    scored_only: bool = False,
) -> Iterator[Observation]:
    """Stream validated observations from one or more files (or directories).

    Filters keep rows whose dataset / split / model / query_id is in the given set.
    ``exclude_flags`` drops rows whose ``meta`` has any of these keys set to a true value
    (e.g. ``["contaminated"]``). ``scored_only`` drops prompt-only rows (model null).
    Every row read is validated, kept or not, so a broken file never passes silently.
    """
    keep_datasets, keep_splits = _as_set(datasets), _as_set(splits)
    keep_models = _as_set(models)
    keep_ids = None if query_ids is None else frozenset(query_ids)
    flags = tuple(exclude_flags)
    path_list = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    for given in path_list:
        for path in observation_files(given):
            with _open_read(path) as handle:
                for number, line in enumerate(handle, start=1):
                    if not line.strip():
                        continue
                    try:
                        obs = Observation.from_dict(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise ObservationError(
                            f"invalid JSON: {exc.msg}", path=path, line=number
                        ) from exc
                    except ObservationError as exc:
                        raise ObservationError(str(exc), path=path, line=number) from exc
                    if keep_datasets is not None and obs.dataset not in keep_datasets:
                        continue
                    if keep_splits is not None and obs.split not in keep_splits:
                        continue
                    if keep_models is not None and obs.model not in keep_models:
                        continue
                    if keep_ids is not None and obs.query_id not in keep_ids:
                        continue
                    if scored_only and obs.model is None:
                        continue
                    if flags and any(obs.meta.get(flag) for flag in flags):
                        continue
                    yield obs


def read_observations(
    paths: PathLike | Sequence[PathLike],
    *,
    check_unique: bool = True,
    **filters: Unpack[ObservationFilters],
) -> list[Observation]:
    """Load observations into a list (filters as in :func:`iter_observations`).

    With ``check_unique`` it also enforces the format's two cross-row rules: the key
    (dataset, query_id, model, variant_id, sample_id) is unique, and one query_id always
    carries the same prompt.
    """
    rows = list(iter_observations(paths, **filters))
    if check_unique:
        _check_cross_row(rows, paths)
    return rows


def _check_cross_row(rows: Sequence[Observation], paths: PathLike | Sequence[PathLike]) -> None:
    where = paths if isinstance(paths, str | os.PathLike) else ", ".join(str(p) for p in paths)
    seen: set[tuple[str, str, str | None, int, int]] = set()
    prompts: dict[tuple[str, str], str] = {}
    for obs in rows:
        key = obs.key
        if key in seen:
            raise ObservationError(
                f"duplicate key (dataset, query_id, model, variant_id, sample_id)={key}",
                path=where,
            )
        seen.add(key)
        known = prompts.setdefault((obs.dataset, obs.query_id), obs.prompt)
        if known != obs.prompt:
            raise ObservationError(
                f"query_id {obs.query_id!r} carries two different prompts", path=where
            )


def group_by_query(observations: Iterable[Observation]) -> dict[str, dict[str, list[Observation]]]:
    """Index scored observations as ``{query_id: {model: [observations]}}`` (order kept)."""
    grouped: dict[str, dict[str, list[Observation]]] = {}
    for obs in observations:
        if obs.model is None or obs.score is None:
            continue
        grouped.setdefault(obs.query_id, {}).setdefault(obs.model, []).append(obs)
    return grouped


def format_observation(obs: Observation | dict[str, Any]) -> str:
    """One observation as a JSON line, newline included, ready to append to a ``.jsonl``.

    Dicts are validated first, so a collector cannot write a row the loader would refuse.
    """
    if not isinstance(obs, Observation):
        obs = Observation.from_dict(obs)
    return json.dumps(obs.to_dict(), ensure_ascii=False, separators=(",", ":")) + "\n"


def write_observations(
    path: PathLike, rows: Iterable[Observation | dict[str, Any]], *, append: bool = False
) -> int:
    """Write (or append) observations to ``.jsonl`` or ``.jsonl.gz``; returns the row count.

    Gzip output has mtime 0, so the same rows give the same bytes.
    """
    path = Path(path)
    if not path.name.endswith(_SUFFIXES):
        raise ObservationError("file name must end in .jsonl or .jsonl.gz", path=path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with contextlib.ExitStack() as stack:
        raw: IO[bytes] = stack.enter_context(open(path, "ab" if append else "wb"))
        if path.name.endswith(".gz"):
            # mtime=0 keeps the bytes reproducible; appending adds a gzip member.
            gz = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0)
            raw = stack.enter_context(gz)  # type: ignore[arg-type]
        for row in rows:
            raw.write(format_observation(row).encode("utf-8"))
            count += 1
    return count
