"""The example run configs shipped in router_models/configs must parse and name known routers."""

from __future__ import annotations

from pathlib import Path

import pytest

from router_models.config import load_config
from router_models.labels import SCHEMES
from router_models.registry import QUALITY_ROUTERS, ROUTERS

CONFIGS = sorted((Path(__file__).resolve().parents[3] / "router_models" / "configs").glob("*.yaml"))


def test_configs_are_shipped() -> None:
    assert CONFIGS, "router_models/configs/ holds no example config"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_parses(path: Path) -> None:
    config = load_config(path)
    assert config.label_scheme in SCHEMES
    assert config.train.paths and config.test.paths
    if config.k_models:  # a K-model quality router (contract v2)
        assert config.router_kind in QUALITY_ROUTERS and len(config.quality_models) >= 2
        return
    assert config.router_kind in ROUTERS
    assert set(config.models) == {"weak", "strong"}


def test_quickstart_runs_from_a_clone() -> None:
    """The quick-start config reads only files committed to the repository, holds out queries
    of its one-split data file, and names a pair that the file holds."""
    from router_models.observations import iter_observations

    root = Path(__file__).resolve().parents[3]
    config = load_config(root / "router_models" / "configs" / "quickstart-local.yaml")
    paths = [root / p for p in (*config.train.paths, *config.test.paths)]
    assert paths and all(path.is_file() for path in paths), paths
    assert all(root in path.resolve().parents for path in paths)  # nothing from ../shared
    assert config.holdout is not None and 0 < config.holdout.fraction < 1
    models = {obs.model for obs in iter_observations(paths[0])}
    assert {config.models["weak"], config.models["strong"]} <= models
    assert config.label_pairs is None


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_data_inside_the_repository_exists(path: Path) -> None:
    """Paths outside ``../shared`` must be committed, or a clone cannot run the config."""
    root = Path(__file__).resolve().parents[3]
    config = load_config(path)
    for data in (*config.train.paths, *config.test.paths):
        if not data.startswith("../shared/"):
            assert (root / data).exists(), f"{path.name}: {data} is not in the repository"
