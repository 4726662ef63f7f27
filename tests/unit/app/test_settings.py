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
