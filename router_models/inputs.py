"""A run's inputs: checked before anything is written, then loaded with the held-out split
and the test-leak guard.

A first run from a clone used to stop half-way (``no such file``) with an empty output
folder behind, or answer ``no scored observations ... after filtering`` without saying which
filter removed everything. Here every missing file is named at once, before the output
directory exists, and an empty result says which rule emptied it and what to change.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from router_models.config import ConfigError, DataConfig, RunConfig
from router_models.evaluate import Truth
from router_models.observations import Observation, iter_observations, read_observations
from router_models.splits import Holdout, Side

__all__ = ["QUICKSTART_HINT", "LeakGuardReport", "check_inputs", "guard_test_leaks", "load_data"]

QUICKSTART_HINT = (
    "to try the trainer on the dataset bundled with the repository, run from its root: "
    "dars-train run --config router_models/configs/quickstart-local.yaml"
)
HOLDOUT_HINT = (
    "to train and evaluate on one data file, hold out a share of its queries: "
    "'data: {holdout: {fraction: 0.25}}' in a run config, or --holdout 0.25 on the command line"
)


def check_inputs(config: RunConfig) -> None:
    """Refuse a run whose input files are missing, naming each one; creates nothing.

    Relative paths are read from the current directory, as the loader does. The encoder is
    not checked here: with a warm embedding cache it is never loaded (the pipeline embeds
    every prompt before it writes anything, so a missing encoder also fails early).
    """
    wanted: list[tuple[str, str]] = []
    for name in ("train", "test"):
        wanted += [(f"data.{name}.paths", str(p)) for p in getattr(config, name).paths]
    nli = config.label_params.get("nli_model")
    if nli:
        wanted.append(("labels.params.nli_model", str(nli)))
    missing = [(key, path) for key, path in dict.fromkeys(wanted) if not Path(path).exists()]
    problems = [f"{key}: {path} does not exist" for key, path in missing]
    out = Path(config.output_dir)
    if out.exists() and not out.is_dir():
        problems.append(f"output_dir: {out} exists and is not a directory")
    if not problems:
        return
    lines = [f"the run cannot start, nothing was written ({len(problems)} problem(s)):"]
    lines += [f"  - {problem}" for problem in problems]
    if missing:
        lines.append(f"  relative paths are read from the current directory, {os.getcwd()}")
        lines.append(
            "  observation files: your own (format: docs/observations.md) or the public "
            "routing data sets, which live beside the repository in ../shared/data"
        )
        lines.append(f"  {QUICKSTART_HINT}")
    raise ConfigError("\n".join(lines))


@dataclass(frozen=True)
class LeakGuardReport:
    """What the test-leak guard removed from the training rows, and by which rule."""

    observations: int
    queries: int
    queries_by_id: int
    queries_by_prompt: int
    kept_observations: int

    def describe(self) -> str:
        return (
            f"the test-leak guard (exclude_test_queries) removed {self.observations} training "
            f"observations of {self.queries} queries that are also in the test set "
            f"({self.queries_by_id} by query id, {self.queries_by_prompt} more by identical "
            f"prompt); {self.kept_observations} observations remain"
        )


def guard_test_leaks(
    rows: Iterable[Observation], truth: Truth
) -> tuple[list[Observation], LeakGuardReport]:
    """Training rows without any test query (same id or same prompt), and what was dropped."""
    ids, prompts = set(truth.query_ids), set(truth.prompts)
    kept: list[Observation] = []
    by_id: set[str] = set()
    by_prompt: set[str] = set()
    dropped = 0
    for obs in rows:
        if obs.query_id in ids:
            by_id.add(obs.query_id)
        elif obs.prompt in prompts:
            by_prompt.add(obs.query_id)
        else:
            kept.append(obs)
            continue
        dropped += 1
    report = LeakGuardReport(dropped, len(by_id | by_prompt), len(by_id), len(by_prompt), len(kept))
    return kept, report


def load_data(
    data: DataConfig,
    *,
    exclude: Truth | None = None,
    holdout: Holdout | None = None,
    side: Side = "train",
    seed: int = 0,
    report: Callable[[str], None] | None = None,
) -> list[Observation]:
    """Scored observations described by a :class:`DataConfig`.

    With ``holdout``, only the queries of ``side`` are kept (``seed`` when the holdout has
    none). With ``exclude`` (a test set), rows whose query id or prompt occurs in it are
    dropped, so no test query leaks into training; ``report`` hears what was dropped.
    """
    rows = read_observations(
        data.paths,
        datasets=data.datasets,
        splits=data.splits,
        exclude_flags=data.exclude_flags,
        scored_only=True,
    )
    if not rows:
        raise ConfigError(_why_empty(data))
    if holdout is not None:
        rows = _holdout_side(rows, data, holdout, side, seed)
    if exclude is not None:
        rows, leaks = guard_test_leaks(rows, exclude)
        if not rows:
            raise ConfigError(
                f"no training observations left in {_paths(data)}: {leaks.describe()}. "
                f"Train and test read the same queries; {HOLDOUT_HINT}, or give a test file "
                "with other queries"
            )
        if leaks.observations and report is not None:
            report(leaks.describe())
    return rows


def _holdout_side(
    rows: Sequence[Observation], data: DataConfig, holdout: Holdout, side: Side, seed: int
) -> list[Observation]:
    kept = [obs for obs in rows if holdout.keeps(obs.query_id, side, seed)]
    if kept:
        return kept
    n_queries = len({obs.query_id for obs in rows})
    used = seed if holdout.seed is None else holdout.seed
    raise ConfigError(
        f"the held-out split (fraction {holdout.fraction}, seed {used}) puts none of the "
        f"{n_queries} queries of {_paths(data)} on the {side} side; change the fraction or "
        "use more queries"
    )


def _paths(data: DataConfig) -> str:
    return ", ".join(str(p) for p in data.paths)


def _why_empty(data: DataConfig) -> str:
    """Which filter left no rows, with what the files do hold (an error path: reads again)."""
    splits: Counter[str] = Counter()
    datasets: Counter[str] = Counter()
    scored = 0
    for obs in iter_observations(data.paths):
        splits[obs.split] += 1
        datasets[obs.dataset] += 1
        scored += obs.model is not None
    if not splits:
        return f"{_paths(data)} holds no observations"
    filters = {
        "splits": data.splits,
        "datasets": data.datasets,
        "exclude_flags": data.exclude_flags or None,
    }
    used = ", ".join(f"{k}={v}" for k, v in filters.items() if v is not None)
    message = (
        f"no scored observations in {_paths(data)} after filtering ({used or 'no filters'}; "
        f"{scored} scored rows; splits in the files: {dict(splits)}, "
        f"datasets: {dict(datasets)})"
    )
    if data.splits and not set(data.splits) & set(splits):
        message += f"; {HOLDOUT_HINT}, without a 'splits' filter"
    return message
