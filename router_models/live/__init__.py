"""The trainer's side of the live loop (issue 9): store, export, retrain, gate, promote, roll back.

- :mod:`~router_models.live.records`: what the service records (request, feedback, grade).
- :mod:`~router_models.live.store`: SQLite (WAL, embedded default) or Redis streams (replicas).
- :mod:`~router_models.live.export`: store -> observations (``docs/observations.md``).
- :mod:`~router_models.live.quality`: live quality per route of one router version.
- :mod:`~router_models.live.retrain`: one turn of the loop; :mod:`~router_models.live.cli`
  is ``dars-train live`` (both import the trainer: not re-exported here, so the service can
  import the store without it).
"""

from router_models.live.export import ExportStats, live_observations, store_observations
from router_models.live.records import Feedback, Grade, LiveRecord, prompt_sha256
from router_models.live.store import LiveStore, RedisStore, SqliteStore, open_store

__all__ = [
    "ExportStats",
    "Feedback",
    "Grade",
    "LiveRecord",
    "LiveStore",
    "RedisStore",
    "SqliteStore",
    "live_observations",
    "open_store",
    "prompt_sha256",
    "store_observations",
]
