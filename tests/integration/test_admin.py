"""Admin API against the running service: threshold get/set, calibration, router hot reload."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import onnx
import pytest
from helpers.onnx_routers import make_linear_router, random_unit_vectors
from integration.upstream_server import FakeUpstream, router_settings, running_router

from router_models.contract import META_CALIBRATION, Calibration

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

TOKEN = "admin-token-for-tests"
MESSAGES = [{"role": "user", "content": "Translate 'good morning' into German."}]


@pytest.fixture(scope="module")
def routers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("routers")
    weights = 3.0 * random_unit_vectors(1, seed=11)[0]
    return {
        "start": make_linear_router(folder / "start.onnx", weights=weights, default_threshold=0.6),
        # Issue 7's pair: A and B differ in default threshold and in score distribution.
        "a": make_linear_router(folder / "a.onnx", weights=weights, default_threshold=0.403),
        "b": make_linear_router(
            folder / "b.onnx", weights=-weights, bias=1.0, default_threshold=0.479
        ),
        "cloudy": make_linear_router(folder / "cloudy.onnx", bias=10.0),
        "foreign": make_linear_router(folder / "foreign.onnx", embedding_model="other/encoder"),
        "wide": make_linear_router(folder / "wide.onnx", dim=768),
    }


@pytest.fixture(scope="module")
def admin(routers: dict[str, Path], encoder: SentenceTransformer) -> Iterator[httpx.Client]:
    edge, cloud = FakeUpstream("edge").start(), FakeUpstream("cloud").start()
    settings = router_settings(routers["start"], edge, cloud, admin_token=TOKEN)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    try:
        with (
            running_router(settings, encoder) as server,
            httpx.Client(base_url=server.url, headers=headers, timeout=30) as client,
        ):
            yield client
    finally:
        edge.stop()
        cloud.stop()


@pytest.fixture(autouse=True)
def _restore(admin: httpx.Client, routers: dict[str, Path]) -> Iterator[None]:
    yield
    admin.put("/admin/threshold", json={"value": 0.6}).raise_for_status()
    admin.post("/admin/router/reload", json={"path": str(routers["start"])}).raise_for_status()


def route(client: httpx.Client) -> dict[str, Any]:
    response = client.post("/v1/route", json={"model": "router", "messages": MESSAGES})
    response.raise_for_status()
    return dict(response.json())


def test_threshold_starts_at_the_routers_default(admin: httpx.Client) -> None:
    response = admin.get("/admin/threshold")

    assert response.status_code == 200
    assert response.json() == {
        "value": 0.6,
        "default": 0.6,
        "source": "default",
        "cloud_share": 0.0,
    }


@pytest.mark.parametrize(("value", "expected_route"), [(0.0, "cloud"), (1.0, "edge")])
def test_put_threshold_changes_live_routing(
    admin: httpx.Client, value: float, expected_route: str
) -> None:
    response = admin.put("/admin/threshold", json={"value": value})

    assert response.status_code == 200
    assert response.json()["value"] == value
    decision = route(admin)
    assert decision["threshold"] == value
    assert decision["route"] == expected_route
    chat = admin.post("/v1/chat/completions", json={"model": "router", "messages": MESSAGES})
    assert chat.headers["x-dars-threshold"] == f"{value:.6f}"


@pytest.mark.parametrize(
    "body", [{"value": 1.5}, {"value": -0.1}, {"value": "high"}, {}, {"value": 0.5, "x": 1}]
)
def test_put_threshold_rejects_bad_values(admin: httpx.Client, body: dict[str, Any]) -> None:
    response = admin.put("/admin/threshold", json=body)

    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert admin.get("/admin/threshold").json()["value"] == 0.6


def test_calibrate_uses_the_router_files_quantiles(
    admin: httpx.Client, routers: dict[str, Path]
) -> None:
    metadata = {p.key: p.value for p in onnx.load(str(routers["start"])).metadata_props}
    expected = Calibration.from_json(metadata[META_CALIBRATION]).threshold_for_cloud_share(0.3)

    response = admin.post("/admin/threshold/calibrate", json={"cloud_share": 0.3})

    assert response.status_code == 200
    assert response.json()["value"] == pytest.approx(expected)
    assert admin.get("/admin/threshold").json()["value"] == pytest.approx(expected)


@pytest.mark.parametrize(("share", "threshold"), [(1.0, 0.0), (0.0, 1.0)])
def test_calibrate_extremes(admin: httpx.Client, share: float, threshold: float) -> None:
    response = admin.post("/admin/threshold/calibrate", json={"cloud_share": share})

    assert response.json()["value"] == threshold


def test_calibrate_rejects_a_share_outside_unit_interval(admin: httpx.Client) -> None:
    response = admin.post("/admin/threshold/calibrate", json={"cloud_share": 1.2})

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "cloud_share"


def test_reload_swaps_the_router_without_restart(
    admin: httpx.Client, routers: dict[str, Path]
) -> None:
    before = route(admin)

    response = admin.post("/admin/router/reload", json={"path": str(routers["cloudy"])})

    assert response.status_code == 200
    assert response.json() == {
        "path": str(routers["cloudy"]),
        "provider": "CPUExecutionProvider",
        "default_threshold": 0.5,
        "embedding_model": "sentence-transformers/all-MiniLM-L6-v2",
    }
    after = route(admin)
    assert after["score"] == pytest.approx(1 / (1 + 2.718281828459045**-10), abs=1e-6)
    assert after["route"] == "cloud"
    assert after["score"] != before["score"]
    assert admin.get("/readyz").json()["router"]["path"] == str(routers["cloudy"])


def test_reload_without_a_path_rereads_the_current_file(
    admin: httpx.Client, routers: dict[str, Path]
) -> None:
    response = admin.post("/admin/router/reload", json={})

    assert response.status_code == 200
    assert response.json()["path"] == str(routers["start"])


@pytest.mark.parametrize("name", ["foreign", "wide"])
def test_reload_refuses_a_router_for_another_encoder(
    admin: httpx.Client, routers: dict[str, Path], name: str
) -> None:
    before = route(admin)

    response = admin.post("/admin/router/reload", json={"path": str(routers[name])})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "router_load_failed"
    assert route(admin)["score"] == before["score"]
    assert admin.get("/readyz").json()["router"]["path"] == str(routers["start"])


# --- issue 7: the threshold on reload, and admin validation messages


def _file_calibration(path: Path) -> Calibration:
    metadata = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    return Calibration.from_json(metadata[META_CALIBRATION])


def test_reload_makes_a_default_threshold_follow_the_new_file(
    routers: dict[str, Path], encoder: SentenceTransformer
) -> None:
    # Regression (issue 7): after reloading B, GET /admin/threshold still answered A's 0.403.
    edge, cloud = FakeUpstream("edge").start(), FakeUpstream("cloud").start()
    settings = router_settings(routers["a"], edge, cloud, admin_token=TOKEN)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    try:
        with (
            running_router(settings, encoder) as server,
            httpx.Client(base_url=server.url, headers=headers, timeout=30) as client,
        ):
            assert client.get("/admin/threshold").json()["value"] == 0.403
            for _ in range(3):
                client.post("/v1/chat/completions", json={"model": "router", "messages": MESSAGES})
            assert client.get("/admin/threshold").json()["cloud_share"] == 1.0

            reloaded = client.post("/admin/router/reload", json={"path": str(routers["b"])})
            threshold = client.get("/admin/threshold").json()
            ready = client.get("/readyz").json()["router"]
            calibrated = client.post("/admin/threshold/calibrate", json={"cloud_share": 0.3})
    finally:
        edge.stop()
        cloud.stop()

    assert reloaded.json()["default_threshold"] == 0.479
    assert threshold == {"value": 0.479, "default": 0.479, "source": "default", "cloud_share": 0.0}
    assert (ready["threshold"], ready["default_threshold"]) == (0.479, 0.479)
    # The window restarted, so calibration uses B's file quantiles, not A's live scores.
    expected = _file_calibration(routers["b"]).threshold_for_cloud_share(0.3)
    assert calibrated.json()["value"] == pytest.approx(expected)


def test_reload_keeps_an_operators_threshold(admin: httpx.Client, routers: dict[str, Path]) -> None:
    admin.put("/admin/threshold", json={"value": 0.25}).raise_for_status()

    admin.post("/admin/router/reload", json={"path": str(routers["b"])}).raise_for_status()

    assert admin.get("/admin/threshold").json() == {
        "value": 0.25,
        "default": 0.479,
        "source": "operator",
        "cloud_share": 0.0,
    }


def test_reload_recalibrates_a_calibrated_threshold_with_the_new_file(
    admin: httpx.Client, routers: dict[str, Path]
) -> None:
    admin.post("/admin/threshold/calibrate", json={"cloud_share": 0.3}).raise_for_status()

    admin.post("/admin/router/reload", json={"path": str(routers["b"])}).raise_for_status()

    threshold = admin.get("/admin/threshold").json()
    expected = _file_calibration(routers["b"]).threshold_for_cloud_share(0.3)
    assert threshold["value"] == pytest.approx(expected)
    assert threshold["source"] == "calibrated"


@pytest.mark.parametrize(
    ("content", "message", "param", "code"),
    [
        (
            b'{"value": NaN}',
            "Invalid request body at 'value': threshold must be a number in [0, 1], got nan.",
            "value",
            "invalid_threshold",
        ),
        (
            b'{"value": Infinity}',
            "Invalid request body at 'value': threshold must be a number in [0, 1], got inf.",
            "value",
            "invalid_threshold",
        ),
        (
            b'{"value": 1.5}',
            "Invalid request body at 'value': threshold must be a number in [0, 1], got 1.5.",
            "value",
            "invalid_threshold",
        ),
        (
            b"",
            "The request body is missing: send a JSON object with 'value'.",
            "value",
            "missing_body",
        ),
        (b"{}", "Missing required field 'value'.", "value", "missing_field"),
        (
            b'{"value": 0.5, "x": 1}',
            "Invalid request body at 'x': Extra inputs are not permitted.",
            "x",
            "unknown_field",
        ),
    ],
    ids=["nan", "inf", "too-large", "empty-body", "empty-object", "unknown-field"],
)
def test_put_threshold_errors_name_the_field_and_carry_a_code(
    admin: httpx.Client, content: bytes, message: str, param: str, code: str
) -> None:
    # Regression (issue 7): NaN said "less than or equal to 1"; an empty body did not name the
    # field; schema errors had code null.
    response = admin.put(
        "/admin/threshold", content=content, headers={"content-type": "application/json"}
    )

    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "message": message,
            "type": "invalid_request_error",
            "param": param,
            "code": code,
        }
    }
