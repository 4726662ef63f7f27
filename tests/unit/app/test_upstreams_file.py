"""The upstreams file: parsed, validated with errors that name the entry, keys from the env."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.settings import Settings
from app.upstreams_file import UpstreamsFileError, configured_upstreams, load_upstreams_file

THREE = """
upstreams:
  - {name: small, base_url: "http://127.0.0.1:8101/v1", model: smollm2}
  - name: medium
    base_url: http://127.0.0.1:8102/v1
    model: qwen
    api_key_env: MEDIUM_KEY
    price_input_per_mtok: 0.2
    price_output_per_mtok: 0.6
    read_timeout_s: 30
  - name: large
    base_url: https://api.example.test/v1
    model: big-model
    router_id: gpt-4o
    price_input_per_mtok: 2.5
    price_output_per_mtok: 10
"""


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "upstreams.yaml"
    path.write_text(text)
    return path


def test_a_file_with_three_upstreams_is_read(tmp_path: Path) -> None:
    config = load_upstreams_file(write(tmp_path, THREE), settings(), {"MEDIUM_KEY": "sk-m"})

    assert config.names == ("small", "medium", "large")
    small, medium, large = config.upstreams
    assert medium.config.api_key is not None
    assert medium.config.api_key.get_secret_value() == "sk-m"
    assert small.config.api_key is None
    assert (medium.config.read_timeout_s, small.config.read_timeout_s) == (30.0, 120.0)
    assert large.config.price_output_per_mtok == 10.0
    # Default failover order: every other upstream, in file order.
    assert config.failover["large"] == ("small", "medium")
    assert config.failover["small"] == ("medium", "large")
    assert config.by_model() == {"smollm2": "small", "qwen": "medium", "big-model": "large"}


def test_router_ids_map_by_router_id_then_name_then_model(tmp_path: Path) -> None:
    config = load_upstreams_file(write(tmp_path, THREE), settings(), {"MEDIUM_KEY": "k"})

    assert config.resolve_router_ids(["gpt-4o", "small", "qwen"]) == ("large", "small", "medium")
    with pytest.raises(KeyError, match=r"\['llama-70b'\] that no configured upstream serves"):
        config.resolve_router_ids(["small", "llama-70b"])


def test_an_explicit_failover_order_is_kept(tmp_path: Path) -> None:
    text = THREE + "failover: [large, small]\n"
    config = load_upstreams_file(write(tmp_path, text), settings(), {"MEDIUM_KEY": "k"})

    assert config.failover == {
        "small": ("large",),
        "medium": ("large", "small"),
        "large": ("small",),
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (THREE, r"'medium' takes its key from \$MEDIUM_KEY, which is not set"),
        ("upstreams: [", "not valid YAML"),
        ("upstreams: []", "upstreams: List should have at least 1 item"),
        (THREE.replace("name: large", "name: small"), r"names must be unique.*\['small'\]"),
        (THREE.replace("model: qwen", "model: smollm2"), "models must be unique"),
        (THREE + "failover: [large, tiny]\n", r"failover names unknown upstreams \['tiny'\]"),
        (THREE.replace("router_id:", "routr_id:"), "upstreams.2.routr_id: Extra inputs"),
        (THREE.replace("https://api", "ftp://api"), "upstreams.2.base_url: String should match"),
        (THREE.replace("price_input_per_mtok: 0.2", "price_input_per_mtok: -1"), "greater than"),
        (THREE.replace("name: large", "name: router-x"), "must not start with 'router'"),
    ],
)
def test_a_bad_file_is_refused_naming_the_problem(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(UpstreamsFileError, match=message) as caught:
        load_upstreams_file(path, settings(), {})
    assert f"DARS_UPSTREAMS_FILE={path}" in str(caught.value)


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UpstreamsFileError, match="cannot read it"):
        load_upstreams_file(tmp_path / "nope.yaml", settings(), {})


def test_the_edge_cloud_shorthand_is_a_two_entry_list() -> None:
    config = configured_upstreams(
        settings(
            edge_base_url="http://edge.test/v1",
            cloud_base_url="http://cloud.test/v1",
            cloud_api_key="sk-cloud",
            failover_cloud_to_edge=True,
        )
    )

    assert config.names == ("edge", "cloud")
    assert config.failover == {"edge": ("cloud",), "cloud": ("edge",)}
    assert config.by_model() == {"edge": "edge", "gpt-4o": "cloud"}
    assert config.source == "env"


def test_the_file_wins_over_the_shorthand(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDIUM_KEY", "k")
    config = configured_upstreams(settings(upstreams_file=write(tmp_path, THREE)))

    assert config.names == ("small", "medium", "large")
