"""The configured upstreams as one list: from ``DARS_UPSTREAMS_FILE`` or the two-entry shorthand.

Why a file: any number of named OpenAI-compatible upstreams, each with its own URL, model,
prices, timeouts and key, does not fit flat environment variables. The file never holds a key:
``api_key_env`` names the environment variable that does, read once at start-up. Without a file,
``DARS_EDGE_*`` / ``DARS_CLOUD_*`` are the same list with two entries, ``edge`` and ``cloud``,
and the failover switches become their failover order. Format (README "Upstreams file")::

    upstreams:
      - name: small                   # [A-Za-z0-9_.-], unique; the x-dars-route value
        base_url: http://127.0.0.1:8080/v1
        model: smollm2                # sent upstream; also a forced `model`; unique
        api_key_env: SMALL_API_KEY    # optional: the env var holding the key
        router_id: smollm2-135m       # optional: its id in router files' dars.models
        price_input_per_mtok: 0.0     # USD per 1M tokens
        price_output_per_mtok: 0.0
        connect_timeout_s: 5          # optional, default DARS_UPSTREAM_CONNECT_TIMEOUT_S
        read_timeout_s: 120           # optional, default DARS_UPSTREAM_READ_TIMEOUT_S
    failover: [small, large]          # optional: tried in this order after the chosen one
                                      # fails; default: every upstream in file order; [] = none
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from app.settings import UpstreamSettings

if TYPE_CHECKING:
    from app.settings import Settings

__all__ = [
    "ROUTER_PREFIX",
    "UpstreamEntry",
    "UpstreamSpec",
    "UpstreamsConfig",
    "UpstreamsFile",
    "UpstreamsFileError",
    "configured_upstreams",
    "load_upstreams_file",
]

ROUTER_PREFIX = "router"  # reserved: `router`, `router-<t>`, `router-cascade` are pseudo-models
_NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"


class UpstreamsFileError(ValueError):
    """``DARS_UPSTREAMS_FILE`` is missing, not YAML, not valid, or names an unset key variable."""


class UpstreamEntry(BaseModel):
    """One upstream as written in the file (validated; unknown keys are refused: typos)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=_NAME_PATTERN)
    base_url: str = Field(pattern=r"^https?://")
    model: str = Field(min_length=1)
    api_key_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    router_id: str | None = Field(default=None, min_length=1)
    price_input_per_mtok: float = Field(default=0.0, ge=0.0)
    price_output_per_mtok: float = Field(default=0.0, ge=0.0)
    connect_timeout_s: float | None = Field(default=None, gt=0.0)
    read_timeout_s: float | None = Field(default=None, gt=0.0)
    max_connections: int | None = Field(default=None, ge=1)


class UpstreamsFile(BaseModel):
    """The whole file: the upstreams and the optional failover order."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    upstreams: list[UpstreamEntry] = Field(min_length=1)
    failover: list[str] | None = None

    @model_validator(mode="after")
    def _names_are_consistent(self) -> UpstreamsFile:
        names = [entry.name for entry in self.upstreams]
        models = [entry.model for entry in self.upstreams]
        for what, values in (("name", names), ("model", models)):
            repeated = sorted({value for value in values if values.count(value) > 1})
            if repeated:
                raise ValueError(f"upstream {what}s must be unique, repeated: {repeated}")
        reserved = [v for v in (*names, *models) if v.startswith(ROUTER_PREFIX)]
        if reserved:
            raise ValueError(
                f"names and models must not start with 'router' (reserved): {reserved}"
            )
        unknown = [name for name in self.failover or () if name not in names]
        if unknown:
            raise ValueError(f"failover names unknown upstreams {unknown}; known: {names}")
        if self.failover is not None and len(set(self.failover)) != len(self.failover):
            raise ValueError("failover repeats an upstream")
        return self


@dataclass(frozen=True)
class UpstreamSpec:
    """One configured upstream: its name, client settings and id in router files."""

    name: str
    config: UpstreamSettings
    router_id: str

    @property
    def model(self) -> str:
        return self.config.model


@dataclass(frozen=True)
class UpstreamsConfig:
    """Every configured upstream in file order, and where each fails over to, in order.

    ``source`` says where the list came from, for error messages: the file, or ``env``.
    """

    upstreams: tuple[UpstreamSpec, ...]
    failover: Mapping[str, tuple[str, ...]]
    source: str = "env"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.upstreams)

    def by_model(self) -> dict[str, str]:
        """Model name -> upstream name: the ``model`` values that force an upstream."""
        return {spec.model: spec.name for spec in self.upstreams}

    def resolve_router_ids(self, ids: Sequence[str]) -> tuple[str, ...]:
        """The upstream of each router model id: by ``router_id`` (default: its name), else
        by its model name. Raises ``KeyError`` naming every id that maps to no upstream."""
        by_id = {spec.router_id: spec.name for spec in self.upstreams}
        by_model = self.by_model()
        missing = [i for i in ids if i not in by_id and i not in by_model]
        if missing:
            known = [f"{spec.name} (router_id {spec.router_id!r})" for spec in self.upstreams]
            raise KeyError(
                f"the router knows model(s) {missing} that no configured upstream serves "
                f"(configured in {self.source}: {', '.join(known)}); add them, or set their "
                "router_id to the id the router file uses"
            )
        return tuple(by_id.get(i) or by_model[i] for i in ids)


def load_upstreams_file(
    path: Path, settings: Settings, environ: Mapping[str, str] = os.environ
) -> UpstreamsConfig:
    """Read and validate ``path``; timeouts default to the ``DARS_UPSTREAM_*`` settings.

    Raises :class:`UpstreamsFileError` with the file name and the offending entry.
    """
    where = f"DARS_UPSTREAMS_FILE={path}"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UpstreamsFileError(f"{where}: cannot read it: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise UpstreamsFileError(f"{where}: not valid YAML: {exc}") from exc
    try:
        parsed = UpstreamsFile.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'file'}: {error['msg']}"
            for error in exc.errors()
        )
        raise UpstreamsFileError(f"{where}: {problems}") from exc
    specs = tuple(_spec(entry, settings, environ, where) for entry in parsed.upstreams)
    order = parsed.failover if parsed.failover is not None else [s.name for s in specs]
    failover = {s.name: tuple(name for name in order if name != s.name) for s in specs}
    return UpstreamsConfig(specs, failover, source=where)


def _spec(
    entry: UpstreamEntry, settings: Settings, environ: Mapping[str, str], where: str
) -> UpstreamSpec:
    key: SecretStr | None = None
    if entry.api_key_env is not None:
        value = environ.get(entry.api_key_env, "").strip()
        if not value:
            raise UpstreamsFileError(
                f"{where}: upstream {entry.name!r} takes its key from ${entry.api_key_env}, "
                "which is not set (or blank)"
            )
        key = SecretStr(value)
    config = UpstreamSettings(
        base_url=entry.base_url,
        model=entry.model,
        api_key=key,
        price_input_per_mtok=entry.price_input_per_mtok,
        price_output_per_mtok=entry.price_output_per_mtok,
        connect_timeout_s=entry.connect_timeout_s or settings.upstream_connect_timeout_s,
        read_timeout_s=entry.read_timeout_s or settings.upstream_read_timeout_s,
        max_connections=entry.max_connections or settings.upstream_max_connections,
    )
    return UpstreamSpec(entry.name, config, entry.router_id or entry.name)


def configured_upstreams(settings: Settings) -> UpstreamsConfig:
    """The upstream list the service serves: the file when set, else edge and cloud.

    Raises :class:`UpstreamsFileError` (file) or ``ValueError`` naming the unset base URL.
    """
    if settings.upstreams_file is not None:
        return load_upstreams_file(settings.upstreams_file, settings)
    edge, cloud = settings.upstream("edge"), settings.upstream("cloud")
    failover = {
        "edge": ("cloud",) if settings.failover_edge_to_cloud else (),
        "cloud": ("edge",) if settings.failover_cloud_to_edge else (),
    }
    specs = (UpstreamSpec("edge", edge, "edge"), UpstreamSpec("cloud", cloud, "cloud"))
    return UpstreamsConfig(specs, failover)
