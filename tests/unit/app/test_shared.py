"""The shared threshold's wire format and the no-Redis state (app/shared.py)."""

from __future__ import annotations

import pytest

from app.policy import ThresholdSnapshot, ThresholdState
from app.settings import Settings
from app.shared import LocalState, build_shared_state, decode_snapshot, encode_snapshot


def test_snapshot_round_trip() -> None:
    snapshot = ThresholdSnapshot(0.42, "calibrated", 0.3)
    assert decode_snapshot(encode_snapshot(snapshot, "abc")) == (snapshot, "abc")
    spend = ThresholdSnapshot(0.42, "calibrated", None, 0.02)
    assert decode_snapshot(encode_snapshot(spend, "s")) == (spend, "s")
    assert decode_snapshot(encode_snapshot(ThresholdSnapshot(0.1, "operator"), "x").encode()) == (
        ThresholdSnapshot(0.1, "operator", None),
        "x",
    )


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[]",
        b'{"value": 0.2, "source": "mine", "calibrated_share": null, "id": "a"}',
        b'{"value": "x", "source": "operator", "calibrated_share": null, "id": "a"}',
        b'{"value": 0.2, "source": "operator", "calibrated_share": null, "id": 3}',
        b'{"value": 0.2, "source": "operator"}',
    ],
)
def test_malformed_snapshots_are_refused(raw: bytes) -> None:
    assert decode_snapshot(raw) is None


def test_apply_takes_value_source_and_share() -> None:
    state = ThresholdState(0.5, source="default")
    state.apply(ThresholdSnapshot(0.2, "calibrated", 0.4))
    assert state.snapshot() == ThresholdSnapshot(0.2, "calibrated", 0.4)


def test_score_listeners_see_every_recorded_score() -> None:
    state = ThresholdState(0.5)
    seen: list[tuple[float, str]] = []
    state.add_score_listener(lambda score, route: seen.append((score, route)))
    state.record(0.7, "cloud")
    state.record(0.1, "edge")
    assert seen == [(0.7, "cloud"), (0.1, "edge")]


async def test_without_redis_the_state_is_local() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    shared = build_shared_state(settings, ThresholdState(0.5))
    assert isinstance(shared, LocalState)
    await shared.start()
    await shared.publish()
    assert await shared.live_scores() is None
    await shared.aclose()


def test_a_snapshot_from_an_earlier_version_has_no_spend() -> None:
    raw = '{"value": 0.3, "source": "calibrated", "calibrated_share": 0.2, "id": "old"}'
    assert decode_snapshot(raw) == (ThresholdSnapshot(0.3, "calibrated", 0.2, None), "old")
