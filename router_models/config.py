"""The ``dars-train run`` config: one YAML file describes data, model pair, labels, router.

Example (``dars-train run --config run.yaml``)::

    seed: 0
    output_dir: runs/gsm8k-dars
    models: {weak: mixtral-8x7b-instruct-v0.1, strong: gpt-4-1106-preview}
    data:
      train: {paths: [data/train.jsonl.gz], splits: [train]}
      test: {paths: [data/test.jsonl.gz], splits: [test], exclude_flags: [contaminated]}
    labels: {scheme: dars, params: {lam: 0.05, beta: 0.2}, pairs: null}
    router: {kind: knn, params: {n_neighbors: 10}}
    embedding: {cache_dir: null, batch_size: 64}
    export: {cloud_share: 0.5}

A data file whose rows are all one split trains and evaluates on one file with a held-out
split by query (``data.test`` may then be left out: it defaults to ``data.train``)::

    data:
      train: {paths: [router_models/data/local-smollm2-qwen05b.jsonl.gz]}
      holdout: {fraction: 0.25, seed: null}     # seed null = the run's seed

``router.kind`` is a registry key (:mod:`router_models.registry`). ``length_aware`` stacks an
embedding router with the query length (the router file then takes ``query_length`` too)::

    router: {kind: length_aware, params: {base_router: knn, base_params: {n_neighbors: 20}}}

``export.query_policy`` (:class:`router_models.query_prep.QueryPolicy` fields) is how the
service turns a chat into the router's text, written into the file as ``dars.query_policy``;
prompts are prepared the same way for training. ``{turns: 2}`` routes a follow-up on itself
and the previous user turn::

    export: {cloud_share: 0.5, query_policy: {turns: 2}}

A list of three or more ``models`` (or any list with ``k_models: true``) trains a K-model
quality router (contract v2, output ``quality``) on DARS label cells (``labels.scheme: dars``)
or single-shot draws, evaluated by AIQ (:mod:`router_models.evaluate_multi`);
``router.kind`` is ``knn``, ``mf`` or ``mlp`` (or the registry's ``*_quality`` keys)::

    models: [gemma-2-9b-it, llama-3.1-8b-instruct, llama3-chatqa-1.5-70b]
    router: {kind: mlp}
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from router_models.contract import DEFAULT_EMBEDDING_MODEL_ID
from router_models.features import Embedder
from router_models.labels import QUALITY_SCHEMES, SCHEMES
from router_models.observations import PathLike
from router_models.query_prep import DEFAULT_QUERY_POLICY, QueryPolicy, QueryPolicyError
from router_models.splits import Holdout

__all__ = [
    "QUALITY_KINDS",
    "ConfigError",
    "DataConfig",
    "EmbeddingConfig",
    "RunConfig",
    "load_config",
]

# ``router.kind`` of a K-model run -> its key in ``registry.QUALITY_ROUTERS``.
QUALITY_KINDS = {"knn": "knn_quality", "mf": "mf_quality", "mlp": "mlp_quality"}


class ConfigError(ValueError):
    """A config file or command line that cannot describe a run."""


def _from_mapping(cls: Any, data: Any, where: str) -> Any:
    """Build a config dataclass from a mapping, refusing unknown keys by name."""
    if data is None:
        return cls()
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where} must be a mapping, got {type(data).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in {where}; allowed: {sorted(known)}")
    return cls(**data)


@dataclass
class DataConfig:
    """Which observation rows to read: files plus the loader's filters."""

    paths: list[str] = field(default_factory=list)
    datasets: list[str] | None = None
    splits: list[str] | None = None
    exclude_flags: list[str] = field(default_factory=list)


@dataclass
class EmbeddingConfig:
    cache_dir: str | None = None
    batch_size: int = 64
    model_path: str | None = None
    model_id: str = DEFAULT_EMBEDDING_MODEL_ID
    device: str = "auto"

    def embedder(self, progress: bool = True) -> Embedder:
        return Embedder(
            model_path=self.model_path,
            model_id=self.model_id,
            cache_dir=self.cache_dir,
            batch_size=self.batch_size,
            device=self.device,
            progress=progress,
        )


@dataclass
class RunConfig:
    """One ``dars-train run``: data, model pair, label scheme, router, seed, output dir.

    ``labels.pairs``: null = train on ``models`` (the deployed pair); ``by-mean`` = the
    training data's weakest and strongest model; ``all`` = every pair ordered by mean
    quality; or a list of ``[weak, strong]``. ``exclude_test_queries`` drops training rows
    whose query id or prompt also occurs in the test data. ``holdout``: a held-out split by
    query (:class:`router_models.splits.Holdout`); training keeps the other queries.
    """

    models: dict[str, str]
    train: DataConfig
    test: DataConfig
    seed: int = 0
    output_dir: str = "runs/dars"
    label_scheme: str = "dars"
    label_params: dict[str, Any] = field(default_factory=dict)
    label_pairs: str | list[list[str]] | None = None
    router_kind: str = "knn"
    router_params: dict[str, Any] = field(default_factory=dict)
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    cloud_share: float | None = None
    default_threshold: float | None = None
    exclude_test_queries: bool = True
    holdout: Holdout | None = None
    # export.query_policy: the service's query preparation (QueryPolicy fields), written into
    # the router file; null = the default, and the file then carries no policy.
    query_policy: dict[str, Any] | None = None
    # A K-model run: the models of the ``quality`` columns, in order (``models`` is then {}).
    quality_models: list[str] = field(default_factory=list)

    @property
    def k_models(self) -> bool:
        """Whether this run trains a K-model quality router (contract v2)."""
        return bool(self.quality_models)

    def policy(self) -> QueryPolicy:
        """The :class:`QueryPolicy` prompts are prepared with (the default when unset)."""
        if self.query_policy is None:
            return DEFAULT_QUERY_POLICY
        try:
            return QueryPolicy.from_json(json.dumps(self.query_policy))
        except QueryPolicyError as exc:
            raise ConfigError(f"query_policy: {exc}") from exc

    def holdout_seed(self) -> int:
        """The held-out split's seed: its own, else the run's."""
        if self.holdout is None or self.holdout.seed is None:
            return self.seed
        return self.holdout.seed


def load_config(source: PathLike | Mapping[str, Any]) -> RunConfig:
    """Parse a run config (YAML file or mapping) into a :class:`RunConfig`."""
    if isinstance(source, Mapping):
        data: Any = dict(source)
    else:
        try:
            data = yaml.safe_load(Path(source).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config {source}: {exc}") from exc
    if not isinstance(data, Mapping):
        raise ConfigError("the config must be a mapping")
    allowed = {
        "seed",
        "output_dir",
        "models",
        "data",
        "labels",
        "router",
        "embedding",
        "export",
        "exclude_test_queries",
        "k_models",
    }
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(f"unknown top-level key(s) {unknown}; allowed: {sorted(allowed)}")
    models = data.get("models") or {}
    quality_models = _quality_models(models, data.get("k_models"))
    if not quality_models and (
        not isinstance(models, Mapping) or not models.get("weak") or not models.get("strong")
    ):
        raise ConfigError("models must name 'weak' and 'strong' (or list 3+ models)")
    sets = _section(data, "data", {"train", "test", "holdout"})
    holdout = _holdout(sets.get("holdout"))
    if not sets.get("train") or not (sets.get("test") or holdout):
        raise ConfigError(
            "data must have 'train' and 'test' sections with 'paths' "
            "(or 'train' and 'holdout' to evaluate on held-out queries of the same data)"
        )
    labels = _section(data, "labels", {"scheme", "params", "pairs"})
    router = _section(data, "router", {"kind", "params"})
    export = _section(data, "export", {"cloud_share", "default_threshold", "query_policy"})
    scheme = str(labels.get("scheme", "dars"))
    if scheme not in SCHEMES:
        raise ConfigError(f"labels.scheme must be one of {list(SCHEMES)}, got {scheme!r}")
    router_kind = str(router.get("kind", "knn"))
    if quality_models:
        router_kind = _check_k_models(router_kind, scheme, labels, export)
    config = RunConfig(
        models={}
        if quality_models
        else {"weak": str(models["weak"]), "strong": str(models["strong"])},
        train=_from_mapping(DataConfig, sets["train"], "data.train"),
        test=_from_mapping(DataConfig, sets.get("test") or sets["train"], "data.test"),
        seed=int(data.get("seed", 0)),
        output_dir=str(data.get("output_dir", "runs/dars")),
        label_scheme=scheme,
        label_params=dict(labels.get("params") or {}),
        label_pairs=labels.get("pairs"),
        router_kind=router_kind,
        router_params=dict(router.get("params") or {}),
        embedding=_from_mapping(EmbeddingConfig, data.get("embedding"), "embedding"),
        cloud_share=export.get("cloud_share"),
        default_threshold=export.get("default_threshold"),
        exclude_test_queries=bool(data.get("exclude_test_queries", True)),
        holdout=holdout,
        query_policy=export.get("query_policy"),
        quality_models=quality_models,
    )
    config.policy()  # a malformed query policy fails here, before any work
    for name in ("train", "test"):
        if not getattr(config, name).paths:
            raise ConfigError(f"data.{name}.paths must list at least one observation file")
    return config


def _quality_models(models: Any, k_models: Any) -> list[str]:
    """The model list of a K-model run (3+ models, or 2+ with ``k_models: true``); [] else."""
    if k_models is not None and not isinstance(k_models, bool):
        raise ConfigError("k_models must be true or false")
    if isinstance(models, Mapping | str):
        if k_models:
            raise ConfigError("k_models: true needs models as a list of model names")
        return []
    if not isinstance(models, list) or not all(isinstance(m, str) and m for m in models):
        raise ConfigError("models must be {weak, strong} or a list of model names")
    if len(set(models)) != len(models):
        raise ConfigError(f"models must be distinct, got {models}")
    if len(models) < (2 if k_models else 3) or k_models is False:
        raise ConfigError(
            "a K-model run needs 3 or more models (or 2 with k_models: true); "
            "for a two-model router write models: {weak: A, strong: B}"
        )
    return list(models)


def _check_k_models(
    kind: str, scheme: str, labels: Mapping[str, Any], export: Mapping[str, Any]
) -> str:
    """The registry key of a K-model run's router; refuses two-model-only settings."""
    key = QUALITY_KINDS.get(kind, kind)
    if key not in QUALITY_KINDS.values():
        raise ConfigError(
            f"router.kind of a K-model run must be one of {sorted(QUALITY_KINDS)}, got {kind!r}"
        )
    if scheme not in QUALITY_SCHEMES:
        raise ConfigError(f"labels.scheme of a K-model run must be one of {list(QUALITY_SCHEMES)}")
    if labels.get("params") or labels.get("pairs") is not None:
        raise ConfigError("labels.params and labels.pairs are two-model settings; drop them")
    two_model = sorted(k for k in ("cloud_share", "default_threshold") if export.get(k) is not None)
    if two_model:
        raise ConfigError(f"export {two_model} are two-model settings; a K-model file has none")
    return key


def _holdout(section: Any) -> Holdout | None:
    """``data.holdout``: ``{fraction, seed}`` or a bare fraction; None when absent."""
    if section is None:
        return None
    if isinstance(section, int | float) and not isinstance(section, bool):
        section = {"fraction": section}
    if not isinstance(section, Mapping) or "fraction" not in section:
        raise ConfigError("data.holdout must be {fraction: F, seed: N} with 0 < F < 1")
    unknown = sorted(set(section) - {"fraction", "seed"})
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in data.holdout; allowed: fraction, seed")
    seed = section.get("seed")
    try:
        return Holdout(float(section["fraction"]), None if seed is None else int(seed))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"data.holdout: {exc}") from exc


def _section(data: Mapping[str, Any], name: str, keys: set[str]) -> Mapping[str, Any]:
    section = data.get(name) or {}
    if not isinstance(section, Mapping):
        raise ConfigError(f"{name} must be a mapping")
    unknown = sorted(set(section) - keys)
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in {name}; allowed: {sorted(keys)}")
    return section
