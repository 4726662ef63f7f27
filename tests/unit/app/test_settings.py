"""Settings read from the environment: blank values mean unset, never an empty secret."""

from __future__ import annotations

import pytest

from app.settings import Settings


@pytest.mark.parametrize("name", ["DARS_CLOUD_API_KEY", "DARS_EDGE_API_KEY", "DARS_ADMIN_TOKEN"])
@pytest.mark.parametrize("blank", ["", "   "])
def test_a_blank_secret_is_unset(monkeypatch: pytest.MonkeyPatch, name: str, blank: str) -> None:
    # docker-compose's `${DARS_CLOUD_API_KEY:-}` passes an empty string; sent as `Bearer ` it
    # is an illegal header and broke every call to that upstream.
    monkeypatch.setenv(name, blank)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    field = name.removeprefix("DARS_").lower()
    assert getattr(settings, field) is None


def test_a_set_secret_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DARS_CLOUD_API_KEY", "sk-test")
    monkeypatch.setenv("DARS_CLOUD_BASE_URL", "http://127.0.0.1:9/v1")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    key = settings.upstream("cloud").api_key
    assert key is not None and key.get_secret_value() == "sk-test"


@pytest.mark.parametrize("raw", ["sk-test\n", "  sk-test\r\n"])
def test_a_secret_read_from_a_file_loses_its_newline(
    monkeypatch: pytest.MonkeyPatch, raw: str
) -> None:
    # A Kubernetes secret made from a file ends in a newline; sent in the Authorization header
    # it made every call to the upstream fail with a misleading connection error.
    monkeypatch.setenv("DARS_CLOUD_API_KEY", raw)
    monkeypatch.setenv("DARS_CLOUD_BASE_URL", "http://127.0.0.1:9/v1\n")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    cloud = settings.upstream("cloud")
    assert cloud.api_key is not None and cloud.api_key.get_secret_value() == "sk-test"
    assert cloud.base_url == "http://127.0.0.1:9/v1"
