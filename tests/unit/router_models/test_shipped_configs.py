"""The example run configs shipped in router_models/configs must parse and name known routers."""

from __future__ import annotations

from pathlib import Path

import pytest

from router_models.config import load_config
from router_models.labels import SCHEMES
from router_models.registry import ROUTERS

CONFIGS = sorted((Path(__file__).resolve().parents[3] / "router_models" / "configs").glob("*.yaml"))


def test_configs_are_shipped() -> None:
    assert CONFIGS, "router_models/configs/ holds no example config"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_parses(path: Path) -> None:
    config = load_config(path)
    assert config.router_kind in ROUTERS
    assert config.label_scheme in SCHEMES
    assert config.train.paths and config.test.paths
    assert set(config.models) == {"weak", "strong"}
