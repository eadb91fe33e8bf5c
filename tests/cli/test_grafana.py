"""The Grafana dashboard: the shipped JSON is what the generator builds, and it covers the metrics.

That every panel's query returns data is checked against a real Prometheus in
integrations/prometheus/test_grafana.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

pytest.importorskip("grafana_foundation_sdk", reason="the grafana extra is not installed")

from obs_middleware._core.status import NOT_FAILURES, USER_ERRORS
from obs_middleware.cli import _grafana
from obs_middleware.exporters.tinybird import asset_path

ASSET = Path(asset_path("grafana", "obs-middleware.json"))


def test_shipped_dashboard_is_what_the_generator_builds() -> None:
    assert ASSET.read_text(encoding="utf-8") == _grafana.render(), (
        "the shipped dashboard is stale: python -m obs_middleware.cli._grafana > "
        "src/obs_middleware/exporters/assets/grafana/obs-middleware.json"
    )


def panels() -> list[dict]:
    return [p for p in json.loads(ASSET.read_text())["panels"] if p["type"] != "row"]


def test_every_query_reads_the_chosen_job_on_the_chosen_prometheus() -> None:
    doc = json.loads(ASSET.read_text())
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["job"]["query"] == "label_values(http_server_requests_total, job)"
    assert len({p["id"] for p in doc["panels"]}) == len(doc["panels"])
    for panel in panels():
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            expr = target["expr"]
            # Every metric selector of the expression is narrowed to $job.
            selectors = re.findall(r"[a-z_]+\{[^}]*\}", expr)
            assert selectors, expr
            assert all('job=~"$job"' in s for s in selectors), expr
            # Range vectors over Grafana's own windows, never a fixed one.
            assert set(re.findall(r"\[([^\]]+)\]", expr)) <= {"$__rate_interval", "$__range"}


def test_job_failures_read_statuses_as_the_core_does() -> None:
    (listed,) = re.findall(r'job_status!~"([^"]+)"', _grafana._FAILED)
    assert set(listed.split("|")) == NOT_FAILURES | USER_ERRORS


@pytest.mark.parametrize(
    "needed",
    [
        "rate(http_server_requests_total",  # request rate
        'http_status_class="5xx"',  # error rate
        "histogram_quantile(0.99, sum by (http_route, le) (rate(http_server_duration_seconds",
        "http_server_active",  # active requests
        "sum by (ai_provider, ai_model) (rate(ai_requests_total",  # AI calls per model
        "sum by (ai_model) (rate(ai_cost_usd_total",  # cost per model
        "sum by (tier) (rate(ai_cost_usd_total",  # cost per user tier
        "sum by (job_service_type, job_status) (rate(job_runs_total",  # job states
        "job_active",
        "job_queue_time_seconds_bucket",
        "db_client_pool_utilization",  # pool utilisation
        "obs_dropped_total",  # dropped telemetry
        "obs_exporter_breaker_state",  # exporter breakers
    ],
)
def test_the_dashboard_shows(needed: str) -> None:
    exprs = [t["expr"] for p in panels() for t in p["targets"]]
    assert any(needed in e for e in exprs), needed
