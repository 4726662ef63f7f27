"""Label collection: rewrite queries, sample real LLMs, grade, and write DARS observations.

``dars-train collect`` is the command; :func:`collect` / :func:`run_collect` the library entry.
"""

from router_models.collect.client import (
    ChatClient,
    CollectError,
    Completion,
    Endpoint,
    RetriesExhausted,
    RetryPolicy,
    UpstreamRejected,
    Usage,
)
from router_models.collect.config import CollectConfig, ConfigError, load_config
from router_models.collect.grading import Grade, GradingError, JudgeGrader, grade_response
from router_models.collect.rewrite import RewriteChecker, Rewriter
from router_models.collect.runner import RunSummary, collect, dry_run, export, run_collect
from router_models.collect.store import JsonlStore, StoreCorrupt, StoreLocked

__all__ = [
    "ChatClient",
    "CollectConfig",
    "CollectError",
    "Completion",
    "ConfigError",
    "Endpoint",
    "Grade",
    "GradingError",
    "JsonlStore",
    "JudgeGrader",
    "RetriesExhausted",
    "RetryPolicy",
    "RewriteChecker",
    "Rewriter",
    "RunSummary",
    "StoreCorrupt",
    "StoreLocked",
    "UpstreamRejected",
    "Usage",
    "collect",
    "dry_run",
    "export",
    "grade_response",
    "load_config",
    "run_collect",
]
