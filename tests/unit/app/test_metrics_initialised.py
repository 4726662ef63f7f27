"""Known label values are exported at 0 from start-up, and stay in step with the code."""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_args

from prometheus_client import generate_latest

from app.metrics import REASONS, ROUTES, UPSTREAM_ERROR_KINDS, Metrics
from app.policy import Reason

UPSTREAM = Path(__file__).resolve().parents[3] / "app" / "upstream.py"


def test_every_error_kind_of_the_upstream_client_is_initialised() -> None:
    source = UPSTREAM.read_text()
    kinds = set(re.findall(r'failure\(\s*\w+,\s*"(\w+)"', source))
    assert kinds, "no kinds found: has classify_error changed shape?"
    assert kinds <= set(UPSTREAM_ERROR_KINDS)


def test_series_exist_before_any_event() -> None:
    metrics = Metrics()
    metrics.initialise_cache("redis")
    text = generate_latest(metrics.registry).decode()
    for route in ROUTES:
        for reason in REASONS:
            assert f'dars_decisions_total{{reason="{reason}",route="{route}"}} 0.0' in text
        for kind in UPSTREAM_ERROR_KINDS:
            assert f'dars_upstream_errors_total{{kind="{kind}",upstream="{route}"}} 0.0' in text
    assert 'dars_fallbacks_total{from_upstream="cloud",to_upstream="edge"} 0.0' in text
    assert 'dars_router_reloads_total{result="ok"} 0.0' in text
    assert 'dars_upstream_retries_total{upstream="cloud"} 0.0' in text
    assert 'dars_cache_requests_total{backend="redis",result="error"} 0.0' in text
    assert "dars_build_info{version=" in text


def test_every_routing_reason_is_initialised() -> None:
    assert set(get_args(Reason)) == set(REASONS)
