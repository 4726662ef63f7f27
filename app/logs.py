"""The service's log output: every record carries the id of the request it was logged for.

``configure_logging`` (called by ``create_app``, never at import) gives the ``app`` loggers one
stderr handler whose lines show ``request_id`` (``-`` outside a request), and makes every log
record in the process carry ``request_id``, so an operator's own format can use
``%(request_id)s`` too. Calling it again only changes the level.
"""

from __future__ import annotations

import logging
from typing import Any

from app.request_context import current_request_id

__all__ = ["LOG_FORMAT", "configure_logging"]

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
_HANDLER_NAME = "dars-router"
_installed_factory: list[bool] = []


def _install_record_factory() -> None:
    if _installed_factory:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        record.request_id = current_request_id.get() or "-"
        return record

    logging.setLogRecordFactory(factory)
    _installed_factory.append(True)


def configure_logging(level: str) -> None:
    """Log the ``app`` package at ``level`` (a ``DARS_LOG_LEVEL`` name) with request ids."""
    _install_record_factory()
    package = logging.getLogger("app")
    package.setLevel(level.upper())
    if not any(handler.get_name() == _HANDLER_NAME for handler in package.handlers):
        handler = logging.StreamHandler()
        handler.set_name(_HANDLER_NAME)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        package.addHandler(handler)
