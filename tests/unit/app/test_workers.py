"""The one-worker-per-process rule (app/workers.py)."""

from __future__ import annotations

import pytest

from app.workers import requested_workers


@pytest.mark.parametrize(
    ("argv", "environ", "child", "expected"),
    [
        (["dars-router", "serve"], {}, False, 1),
        (["uvicorn", "app.main:create_app", "--factory"], {}, True, 1),
        (["uvicorn", "app.main:create_app", "--factory", "--workers", "4"], {}, True, 4),
        (["uvicorn", "app.main:create_app", "--workers=2"], {}, True, 2),
        (["uvicorn", "app.main:create_app", "--workers", "4"], {}, False, 1),  # the supervisor
        (["dars-router", "serve"], {"WEB_CONCURRENCY": "3"}, False, 3),
        (["dars-router", "serve"], {"WEB_CONCURRENCY": "junk"}, False, 1),
    ],
)
def test_requested_workers(
    argv: list[str], environ: dict[str, str], child: bool, expected: int
) -> None:
    assert requested_workers(argv, environ, child=child) == expected


def test_this_test_process_is_one_worker() -> None:
    assert requested_workers() == 1
