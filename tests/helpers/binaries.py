"""Find a tool's binary for a test: on PATH or beside the running Python (venv ``bin/``).

Missing, the test skips, or fails when ``CI`` is set (CI installs every tool it needs), as
``tests/integration/conftest.py`` does for ``redis-server``.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

__all__ = ["require_binary"]


def require_binary(name: str, install_hint: str) -> str:
    """The path of ``name``; skips the test (fails under CI) when it is not installed."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        reason = f"{name} is not installed ({install_hint})"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return found
