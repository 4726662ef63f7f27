"""Routing policy: the model field, the threshold decision, the live window and calibration."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from app.errors import InvalidRequest, ModelNotFound
from app.metrics import Metrics
from app.policy import (
    MIN_LIVE_SCORES,
    Decision,
    ModelSelection,
    ThresholdState,
    check_threshold,
    decide,
    parse_model_field,
)
from app.settings import Settings
from router_models.contract import Calibration

EDGE, CLOUD = "qwen2.5-1.5b-instruct", "gpt-4o"


def parse(model: str) -> ModelSelection:
    return parse_model_field(model, edge_model=EDGE, cloud_model=CLOUD)


# --- decide


@pytest.mark.parametrize(
    ("score", "threshold", "route"),
    [
        (0.7, 0.5, "cloud"),
        (0.5, 0.5, "cloud"),  # the threshold itself pays for the cloud
        (0.4999, 0.5, "edge"),
        (0.0, 0.0, "cloud"),  # threshold 0: everything to the cloud
        (0.9999, 1.0, "edge"),  # threshold 1: everything to the edge...
        (1.0, 1.0, "cloud"),  # ...unless the score is exactly 1
    ],
)
def test_decide(score: float, threshold: float, route: str) -> None:
    decision = decide(score, threshold)

    assert decision == Decision(route=route, reason="threshold", score=score, threshold=threshold)  # type: ignore[arg-type]


def test_forced_decisions_carry_no_score() -> None:
    assert Decision.forced("cloud") == Decision(route="cloud", reason="forced")
    assert (Decision.forced("edge").score, Decision.forced("edge").threshold) == (None, None)


# --- parse_model_field


def test_router_uses_the_server_threshold() -> None:
    selection = parse("router")

    assert selection == ModelSelection(model="router", forced_route=None, threshold=None)
    assert selection.forced_route is None


@pytest.mark.parametrize(
    ("model", "threshold"),
    [
        ("router-0.35", 0.35),
        ("router-0", 0.0),
        ("router-1", 1.0),
        ("router-1.0", 1.0),
        ("router-0.", 0.0),
        ("router-.5", 0.5),
        ("router-000.25", 0.25),
        ("router-0.123456789", 0.123456789),
    ],
)
def test_router_with_a_per_request_threshold(model: str, threshold: float) -> None:
    selection = parse(model)

    assert selection.forced_route is None
    assert selection.threshold == threshold
    assert selection.model == model


@pytest.mark.parametrize(("model", "route"), [(EDGE, "edge"), (CLOUD, "cloud")])
def test_upstream_names_force_the_route(model: str, route: str) -> None:
    selection = parse(model)

    assert selection.forced_route == route
    assert selection.forced_route is not None
    assert selection.threshold is None


@pytest.mark.parametrize(
    "model",
    [
        "router-",
        "router-abc",
        "router-nan",
        "router-NaN",
        "router-inf",
        "router-infinity",
        "router--0.1",
        "router-+0.5",
        "router-1.01",
        "router-2",
        "router-1e-1",
        "router-0.5e0",
        "router-0_5",
        "router-0.3_5",
        "router- 0.5",
        "router-0.5 ",
        "router-0x1",
        "router-0.5-0.6",
        "router-mf-0.7",  # RouteLLM's form: a router name we do not have
        "router-٠.٥",  # Arabic-Indic digits: float() accepts them, we do not
        "router-.",
    ],
)
def test_bad_thresholds_are_invalid_requests(model: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse(model)

    assert info.value.param == "model"
    assert info.value.code == "invalid_threshold"
    assert info.value.status_code == 400


@pytest.mark.parametrize(
    "model",
    ["gpt-4", "", "Router", "ROUTER", "router ", " router", "routerx", "router0.5", EDGE + " "],
)
def test_unknown_models_are_not_found(model: str) -> None:
    with pytest.raises(ModelNotFound) as info:
        parse(model)

    assert info.value.param == "model"
    assert info.value.status_code == 404
    assert info.value.code == "model_not_found"


@pytest.mark.parametrize("value", [0, 0.0, 0.5, 1, np.float32(0.25), np.float64(1.0)])
def test_check_threshold_accepts_numbers_in_the_unit_interval(value: float) -> None:
    assert check_threshold(value) == float(value)


@pytest.mark.parametrize(
    "value", [-0.01, 1.0001, float("nan"), float("inf"), -float("inf"), True, "0.5", None]
)
def test_check_threshold_rejects_everything_else(value: object) -> None:
    with pytest.raises(InvalidRequest) as info:
        check_threshold(value)

    assert info.value.code == "invalid_threshold"
    assert info.value.param == "threshold"


# --- ThresholdState


def test_threshold_state_get_set_and_gauge() -> None:
    metrics = Metrics()
    state = ThresholdState(0.4, window=10, metrics=metrics)
    assert state.get() == 0.4
    assert metrics.registry.get_sample_value("dars_threshold") == 0.4

    assert state.set(0.7) == 0.7

    assert state.get() == 0.7
    assert metrics.registry.get_sample_value("dars_threshold") == 0.7


@pytest.mark.parametrize("value", [-0.1, 1.5, float("nan")])
def test_threshold_state_refuses_bad_values_and_keeps_the_old_one(value: float) -> None:
    state = ThresholdState(0.4, window=10)

    with pytest.raises(InvalidRequest):
        state.set(value)

    assert state.get() == 0.4


def test_threshold_state_refuses_a_bad_initial_threshold() -> None:
    with pytest.raises(InvalidRequest):
        ThresholdState(2.0)


def test_from_settings_prefers_the_configured_threshold() -> None:
    configured = Settings(_env_file=None, threshold=0.2, calibration_window=50)  # type: ignore[call-arg]
    unset = Settings(_env_file=None)  # type: ignore[call-arg]

    assert ThresholdState.from_settings(configured, default_threshold=0.6).get() == 0.2
    state = ThresholdState.from_settings(unset, default_threshold=0.6)
    assert state.get() == 0.6
    assert state.window == unset.calibration_window
    assert ThresholdState.from_settings(configured, default_threshold=0.6).window == 50


def test_cloud_share_over_a_rolling_window() -> None:
    metrics = Metrics()
    state = ThresholdState(0.5, window=4, metrics=metrics)
    assert state.cloud_share() == 0.0

    for score, route in [(0.9, "cloud"), (0.1, "edge"), (0.8, "cloud"), (0.2, "edge")]:
        state.record(score, route)  # type: ignore[arg-type]
    assert state.cloud_share() == 0.5
    assert metrics.registry.get_sample_value("dars_cloud_share") == 0.5

    state.record(0.3, "edge")  # evicts the first (cloud) entry
    assert state.cloud_share() == 0.25
    state.record(0.4, "edge")  # evicts an edge entry
    assert state.cloud_share() == 0.25
    for _ in range(4):
        state.record(0.95, "cloud")
    assert state.cloud_share() == 1.0
    assert metrics.registry.get_sample_value("dars_cloud_share") == 1.0
    np.testing.assert_array_equal(state.live_scores(), [0.95] * 4)


def test_record_is_thread_safe() -> None:
    state = ThresholdState(0.5, window=100_000)

    def work(route: str) -> None:
        for _ in range(2000):
            state.record(0.5, route)  # type: ignore[arg-type]

    threads = [threading.Thread(target=work, args=(r,)) for r in ("cloud", "edge") * 2]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert state.live_scores().size == 8000
    assert state.cloud_share() == 0.5


def test_calibrate_from_the_router_quantiles_without_live_traffic() -> None:
    calibration = Calibration.from_scores(np.linspace(0.0, 1.0, 1001))
    state = ThresholdState(0.5, window=1000)

    threshold = state.calibrate(0.3, calibration)

    assert threshold == pytest.approx(0.7)
    assert state.get() == threshold


def test_calibrate_prefers_live_scores_once_there_are_enough() -> None:
    calibration = Calibration.from_scores(np.linspace(0.0, 1.0, 1001))
    state = ThresholdState(0.5, window=1000)
    live = np.random.default_rng(0).beta(2.0, 5.0, size=MIN_LIVE_SCORES)
    for score in live[:-1]:
        state.record(float(score), "edge")
    assert state.calibrate(0.25, calibration) == pytest.approx(0.75)  # one short: file quantiles

    state.record(float(live[-1]), "edge")
    threshold = state.calibrate(0.25, calibration)

    assert threshold == pytest.approx(float(np.quantile(live, 0.75)))
    assert np.mean(live >= threshold) == pytest.approx(0.25, abs=1.0 / MIN_LIVE_SCORES)


def test_calibrate_without_live_scores_or_calibration_is_an_error() -> None:
    state = ThresholdState(0.5, window=1000)

    with pytest.raises(InvalidRequest) as info:
        state.calibrate(0.3, None)

    assert info.value.code == "calibration_unavailable"
    assert state.get() == 0.5


@pytest.mark.parametrize(("share", "threshold"), [(1.0, 0.0), (0.0, 1.0)])
def test_calibrate_extremes_need_no_data(share: float, threshold: float) -> None:
    state = ThresholdState(0.5, window=1000)

    assert state.calibrate(share, None) == threshold


@pytest.mark.parametrize("share", [-0.1, 1.1, float("nan"), "0.3"])
def test_calibrate_rejects_bad_shares(share: float) -> None:
    state = ThresholdState(0.5, window=1000)

    with pytest.raises(InvalidRequest) as info:
        state.calibrate(share, Calibration.from_scores([0.1, 0.9]))

    assert info.value.code == "invalid_cloud_share"
    assert state.get() == 0.5


def test_calibrate_clips_thresholds_from_odd_quantiles() -> None:
    calibration = Calibration(probs=(0.0, 1.0), quantiles=(-0.5, 1.5))
    state = ThresholdState(0.5, window=1000)

    assert state.calibrate(0.01, calibration) == 1.0
    assert state.calibrate(0.99, calibration) == 0.0


@pytest.mark.parametrize("model", ["router-1.5", "router--0.1", "router-abc", "router-2"])
def test_every_bad_threshold_in_model_has_one_wording(model: str) -> None:
    # Regression (issue 7): router-1.5 and router--0.1 were worded differently.
    with pytest.raises(InvalidRequest) as info:
        parse(model)

    text = model.removeprefix("router-")
    assert info.value.message == (
        f"threshold must be a number in [0, 1], got {text!r} in model {model!r}; "
        "use router-<t>, e.g. router-0.35"
    )


# --- the reload rule (issue 7: reload kept the old router's threshold and window)

NEW_CALIBRATION = Calibration.from_scores(np.linspace(0.0, 1.0, 1001))


def test_a_default_threshold_follows_the_new_router_and_the_window_restarts() -> None:
    metrics = Metrics()
    unset = Settings(_env_file=None)  # type: ignore[call-arg]
    state = ThresholdState.from_settings(unset, default_threshold=0.403, metrics=metrics)
    for _ in range(60):
        state.record(0.9, "cloud")

    assert state.follow_router(0.479, NEW_CALIBRATION) == 0.479

    assert (state.get(), state.source) == (0.479, "default")
    assert state.live_scores().size == 0
    assert state.cloud_share() == 0.0
    assert metrics.registry.get_sample_value("dars_threshold") == 0.479
    assert metrics.registry.get_sample_value("dars_cloud_share") == 0.0


@pytest.mark.parametrize("how", ["put", "settings"])
def test_an_operators_threshold_survives_a_reload(how: str) -> None:
    configured = Settings(_env_file=None, threshold=0.25)  # type: ignore[call-arg]
    unset = Settings(_env_file=None)  # type: ignore[call-arg]
    state = ThresholdState.from_settings(
        configured if how == "settings" else unset, default_threshold=0.403
    )
    if how == "put":
        state.set(0.25)
    state.record(0.9, "cloud")

    state.follow_router(0.479, NEW_CALIBRATION)

    assert (state.get(), state.source) == (0.25, "operator")
    assert state.live_scores().size == 0


def test_a_calibrated_threshold_is_recalibrated_with_the_new_files_calibration() -> None:
    old = Calibration.from_scores(np.linspace(0.0, 0.5, 1001))
    state = ThresholdState(0.4, window=1000, source="default")
    for score in np.linspace(0.0, 0.5, MIN_LIVE_SCORES):  # old router's live scores
        state.record(float(score), "edge")
    state.calibrate(0.3, old)
    assert state.source == "calibrated"

    threshold = state.follow_router(0.479, NEW_CALIBRATION)

    # The new file's quantiles, not the old live scores (the window restarted).
    assert threshold == pytest.approx(0.7)
    assert (state.get(), state.source) == (threshold, "calibrated")


def test_a_calibrated_threshold_falls_back_to_the_default_without_calibration() -> None:
    state = ThresholdState(0.4, window=100, source="default")
    state.calibrate(0.3, NEW_CALIBRATION)

    assert state.follow_router(0.479, None) == 0.479
    assert state.source == "default"
