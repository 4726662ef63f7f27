"""The collection run's configuration: one typed object, from YAML and command-line overrides.

Example (YAML)::

    out: runs/collect/observations.jsonl
    seed: 0
    prompts:
      - {path: prompts-gsm8k.jsonl.gz, splits: [test], limit: 50, max_tokens: 256}
      - {path: my-prompts.jsonl, grader: short}
    models:                        # sampled; USD per million tokens
      - {name: smollm2-135m, base_url: "http://127.0.0.1:8101/v1", price_in: 0.02, price_out: 0.06}
      - {name: gpt-4o-mini, base_url: "https://api.openai.com/v1", api_key_env: OPENAI_API_KEY,
         price_in: 0.15, price_out: 0.6, max_concurrency: 8, rate_limit: 5}
    endpoints: []                  # extra endpoints used only as rewriter / judge
    rewrite: {k: 2, model: gpt-4o-mini, min_similarity: 0.8}
    sampling: {n: 3, temperature: 0.7, max_tokens: 256}
    judge: {model: gpt-4o-mini}    # only needed for prompts graded by "judge"
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from router_models.collect.client import CollectError, Endpoint
from router_models.collect.grading import GRADERS, ShortMode

__all__ = [
    "CollectConfig",
    "ConfigError",
    "JudgeConfig",
    "PromptSource",
    "RewriteConfig",
    "SamplingConfig",
    "load_config",
]


class ConfigError(CollectError):
    """The configuration is incomplete or names something that does not exist."""


@dataclass(frozen=True, kw_only=True)
class PromptSource:
    """One prompt file, its filters, and per-source overrides of grader and output length."""

    path: str
    splits: tuple[str, ...] | None = None
    datasets: tuple[str, ...] | None = None
    limit: int | None = None
    shuffle_seed: int | None = None
    grader: str | None = None
    max_tokens: int | None = None


@dataclass(frozen=True, kw_only=True)
class RewriteConfig:
    """``k`` accepted rewrites per query from ``model`` (k = 0: originals only)."""

    k: int = 2
    model: str | None = None
    temperature: float = 0.7
    max_tokens: int = 256
    attempts: int = 2
    min_similarity: float = 0.8


@dataclass(frozen=True, kw_only=True)
class SamplingConfig:
    """``n`` decodes per (model, variant), each with its own seed."""

    n: int = 3
    temperature: float = 0.7
    max_tokens: int = 256


@dataclass(frozen=True, kw_only=True)
class JudgeConfig:
    model: str
    prompt: str | None = None
    max_tokens: int = 512


@dataclass(frozen=True, kw_only=True)
class CollectConfig:
    prompts: tuple[PromptSource, ...]
    models: tuple[Endpoint, ...]
    out: str = "runs/collect/observations.jsonl"
    seed: int = 0
    endpoints: tuple[Endpoint, ...] = ()
    rewrite: RewriteConfig = field(default_factory=RewriteConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    judge: JudgeConfig | None = None
    short_mode: ShortMode = "contains"
    instructions: Mapping[str, str] = field(default_factory=dict)
    max_failures: int = 50

    def __post_init__(self) -> None:
        if not self.prompts:
            raise ConfigError("no prompt set given")
        if not self.models:
            raise ConfigError("no model to sample given")
        names = [e.name for e in (*self.models, *self.endpoints)]
        if len(set(names)) != len(names):
            raise ConfigError(f"endpoint names must be unique, got {names}")
        if self.rewrite.k > 0 and self.rewrite.model is None:
            raise ConfigError("rewrite.k > 0 needs rewrite.model (an endpoint name)")
        for used in (
            self.rewrite.model if self.rewrite.k else None,
            self.judge and self.judge.model,
        ):
            if used and used not in names:
                raise ConfigError(f"unknown endpoint {used!r}; known: {names}")
        for source in self.prompts:
            if source.grader is not None and source.grader not in GRADERS:
                raise ConfigError(f"unknown grader {source.grader!r}; expected one of {GRADERS}")
        if self.sampling.n < 1 or self.rewrite.k < 0:
            raise ConfigError("sampling.n must be >= 1 and rewrite.k >= 0")
        if self.short_mode not in ("em", "contains", "f1"):
            raise ConfigError(f"unknown short_mode {self.short_mode!r}")

    def endpoint(self, name: str) -> Endpoint:
        for candidate in (*self.models, *self.endpoints):
            if candidate.name == name:
                return candidate
        raise ConfigError(f"unknown endpoint {name!r}")

    @property
    def rewrites_path(self) -> Path:
        """Sidecar store of the accepted/rejected rewrites, next to the observations."""
        out = Path(self.out)
        return out.with_name(out.name.removesuffix(".jsonl") + ".rewrites.jsonl")


def _build(cls: type[Any], data: Any, where: str) -> Any:
    if isinstance(data, cls):
        return data
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where} must be a mapping")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    try:
        return cls(**values)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def load_config(data: Mapping[str, Any] | str | Path) -> CollectConfig:
    """Build and check a config from a mapping or a YAML file."""
    if isinstance(data, str | Path):
        try:
            data = yaml.safe_load(Path(data).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config {data}: {exc}") from exc
    if not isinstance(data, Mapping):
        raise ConfigError("the config must be a mapping")
    raw = dict(data)
    raw["prompts"] = tuple(
        _build(PromptSource, p if not isinstance(p, str) else {"path": p}, f"prompts[{i}]")
        for i, p in enumerate(raw.get("prompts") or ())
    )
    for key in ("models", "endpoints"):
        raw[key] = tuple(
            _build(Endpoint, e, f"{key}[{i}]") for i, e in enumerate(raw.get(key) or ())
        )
    for key, cls in (("rewrite", RewriteConfig), ("sampling", SamplingConfig)):
        raw[key] = _build(cls, raw.get(key) or {}, key)
    if raw.get("judge") is not None:
        raw["judge"] = _build(JudgeConfig, raw["judge"], "judge")
    cfg: CollectConfig = _build(CollectConfig, raw, "config")
    return cfg
