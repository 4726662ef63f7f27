"""The service installs and runs without the trainer's dependencies.

A child interpreter refuses to import scikit-learn, scipy, matplotlib and sentence-transformers
(``None`` in ``sys.modules``, so they look uninstalled; tqdm is not among them: transformers
needs it), then imports every module of
``app`` and embeds a text with the encoder the service would load. Any module that pulls a
trainer-only package at import, directly or through ``router_models``, fails this test.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

TRAINER_ONLY = ("sklearn", "scipy", "matplotlib", "sentence_transformers")

_CHILD = textwrap.dedent(
    """
    import importlib, pkgutil, sys

    BLOCKED = sys.argv[1].split(",")
    for name in BLOCKED:  # None in sys.modules: import fails, find_spec says "not installed"
        sys.modules[name] = None

    import app
    names = [m.name for m in pkgutil.walk_packages(app.__path__, "app.")]
    for name in names:
        importlib.import_module(name)
    import app.main
    app.main.create_app
    from router_models.contract import load_encoder
    vectors = load_encoder(device="cpu").encode(["hi"], normalize_embeddings=True)
    assert vectors.shape == (1, 384), vectors.shape
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED and sys.modules[m])
    print("imported", len(names), "modules; leaked:", leaked)
    sys.exit(1 if leaked else 0)
    """
)


def test_app_imports_and_embeds_without_trainer_packages() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, ",".join(TRAINER_ONLY)],
        capture_output=True,
        text=True,
        timeout=240,
        env={"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    if done.returncode != 0:
        pytest.fail(f"stdout:\n{done.stdout}\nstderr:\n{done.stderr[-4000:]}")
    assert "leaked: []" in done.stdout
