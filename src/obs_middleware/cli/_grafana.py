"""The Grafana dashboard of obs-middleware's Prometheus metrics, built as code.

``dashboard_json()`` builds it with ``grafana-foundation-sdk`` (the ``grafana`` extra). The
package ships the result (``exporters/assets/grafana/obs-middleware.json``, printed by
``obs assets grafana`` without the SDK), kept equal to this module by a test; regenerate it with
``python -m obs_middleware.cli._grafana > src/obs_middleware/exporters/assets/grafana/…json``.

Every query selects ``job=~"$job"`` (the scrape jobs exporting ``http_server_requests_total``)
on the Prometheus picked by ``$datasource``; rates are over ``$__rate_interval``, totals over
``$__range``. Metric names are those of ``obs_middleware.exporters.prometheus``. The
integration suite (``integrations/prometheus/test_grafana.py``) runs every panel's queries
against a real Prometheus after a load of the demo service and requires data from each.
"""

from __future__ import annotations

import json
import sys
import warnings
from typing import Any

with warnings.catch_warnings():
    # The SDK warns, as its modules load, that a v2 dashboard schema exists. We build the classic
    # JSON model on purpose: the one Grafana 10 to 12 import and provision as they are.
    warnings.simplefilter("ignore", DeprecationWarning)
    from grafana_foundation_sdk.builders import bargauge, stat, statetimeline, timeseries
    from grafana_foundation_sdk.builders.common import ReduceDataOptions, VizLegendOptions
    from grafana_foundation_sdk.builders.dashboard import (
        Dashboard,
        DatasourceVariable,
        QueryVariable,
        Row,
        ThresholdsConfig,
    )
    from grafana_foundation_sdk.builders.prometheus import Dataquery
    from grafana_foundation_sdk.cog.builder import Builder
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models import dashboard as model
    from grafana_foundation_sdk.models.common import (
        DataSourceRef,
        LegendDisplayMode,
        LegendPlacement,
    )

__all__ = ["TITLE", "UID", "dashboard", "dashboard_json", "render"]

UID = "obs-middleware"
TITLE = "obs-middleware"
_DS = DataSourceRef(type_val="prometheus", uid="${datasource}")
_SEL = 'job=~"$job"'
_RATE = "[$__rate_interval]"
_5XX = 'http_status_class="5xx"'
# Job statuses that are a failure of the service (_core/status.py), as the alert rules read them.
_FAILED = 'job_status!~"ok|cancelled|invalid_input|content_violation"'

PanelBuilder = Builder[model.Panel]


def _query(expr: str, legend: str = "__auto", ref: str = "A") -> Dataquery:
    query: Dataquery = Dataquery().expr(expr).ref_id(ref).legend_format(legend).range()
    return query


def _rate(metric: str, by: str, matchers: str = "") -> str:
    """``sum by (by) (rate(metric{job=~"$job",matchers}[$__rate_interval]))``."""
    extra = f",{matchers}" if matchers else ""
    return f"sum by ({by}) (rate({metric}{{{_SEL}{extra}}}{_RATE}))"


def _quantile(q: float, histogram: str, by: str = "") -> str:
    """The ``q`` quantile of a duration histogram's buckets, per ``by`` (or over everything)."""
    keys = f"{by}, le" if by else "le"
    return f"histogram_quantile({q}, {_rate(histogram + '_bucket', keys)})"


def _ratio(part: str, whole: str) -> str:
    """``part / whole``, 0 (not absent) where ``whole`` has data and ``part`` has none yet."""
    return f"({part} or {whole} * 0) / {whole}"


def _series(
    title: str, description: str, unit: str, *queries: Dataquery, width: int = 12
) -> timeseries.Panel:
    # Typed locals: the builders return ``typing.Self``, which mypy's 3.10 target reads as Any.
    panel: timeseries.Panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(_DS)
        .unit(unit)
        .min(0)
        .span(width)
        .height(8)
        .fill_opacity(10)
        .legend(
            VizLegendOptions()
            .display_mode(LegendDisplayMode("table"))
            .placement(LegendPlacement("bottom"))
            .show_legend(True)
            .calcs(["mean", "max"])
        )
    )
    for query in queries:
        panel = panel.with_target(query)
    return panel


def _stat(title: str, description: str, unit: str, expr: str) -> stat.Panel:
    panel: stat.Panel = (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(_DS)
        .unit(unit)
        .span(6)
        .height(4)
        .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]))
        .with_target(_query(expr))
    )
    return panel


def _quantiles(histogram: str, by: str, legend: str) -> list[Dataquery]:
    return [
        _query(_quantile(q, histogram, by), f"p{round(q * 100)} {legend}", ref)
        for q, ref in ((0.5, "A"), (0.95, "B"), (0.99, "C"))
    ]


# -- rows ------------------------------------------------------------------------------------------
def _http() -> list[PanelBuilder]:
    requests = "http_server_requests_total"
    total = f"sum(rate({requests}{{{_SEL}}}{_RATE}))"
    failed = f"sum(rate({requests}{{{_SEL},{_5XX}}}{_RATE}))"
    by_route = _rate(requests, "http_route")
    return [
        _stat("Requests / s", "HTTP server requests per second, all routes.", "reqps", total),
        _stat(
            "5xx ratio",
            "Share of HTTP requests answered 5xx. Alert: ObsHighErrorRate (> 10%).",
            "percentunit",
            _ratio(failed, total),
        ),
        _stat(
            "p95 latency",
            "95th percentile of HTTP request duration, all routes. Alert: ObsSlowRequests.",
            "s",
            _quantile(0.95, "http_server_duration_seconds"),
        ),
        _stat(
            "Active requests",
            "HTTP server requests in progress.",
            "short",
            f"sum(http_server_active{{{_SEL}}})",
        ),
        _series(
            "Request rate by route",
            "HTTP server requests per second, by route and status class.",
            "reqps",
            _query(
                _rate(requests, "http_route, http_status_class"),
                "{{http_route}} {{http_status_class}}",
            ),
        ),
        _series(
            "Error rate by route",
            "Share of each route's requests answered 5xx.",
            "percentunit",
            _query(_ratio(_rate(requests, "http_route", _5XX), by_route), "{{http_route}}"),
        ),
        _series(
            "Latency percentiles by route",
            "p50, p95 and p99 of HTTP request duration per route (from the duration histogram: "
            "interpolated within a bucket).",
            "s",
            *_quantiles("http_server_duration_seconds", "http_route", "{{http_route}}"),
        ),
        _series(
            "Active requests by method",
            "HTTP server requests in progress, by method.",
            "short",
            _query(f"sum by (http_method) (http_server_active{{{_SEL}}})", "{{http_method}}"),
        ),
    ]


def _ai() -> list[PanelBuilder]:
    by_model = "ai_provider, ai_model"
    return [
        _series(
            "AI calls by model",
            "AI provider calls per second, by provider and model.",
            "reqps",
            _query(_rate("ai_requests_total", by_model), "{{ai_provider}} {{ai_model}}"),
            width=8,
        ),
        _series(
            "AI failure ratio by model",
            "Share of calls failing for the provider's or our reasons; a user's own outcome "
            "(invalid input, content violation) is not counted. Alert: ObsAIFailures (> 5%).",
            "percentunit",
            _query(
                _ratio(_rate("ai_errors_total", by_model), _rate("ai_requests_total", by_model)),
                "{{ai_provider}} {{ai_model}}",
            ),
            width=8,
        ),
        _series(
            "AI latency p95 by model",
            "95th percentile of AI call duration, by provider and model.",
            "s",
            _query(
                _quantile(0.95, "ai_duration_seconds", by_model), "{{ai_provider}} {{ai_model}}"
            ),
            width=8,
        ),
        _series(
            "AI cost by model (USD / hour)",
            "Spend rate per model, from the prices of obs-middleware's price list.",
            "currencyUSD",
            _query(f"{_rate('ai_cost_usd_total', 'ai_model')} * 3600", "{{ai_model}}"),
        ),
        _series(
            "AI cost by user tier (USD / hour)",
            "Spend rate per user tier (obs.set_user(user, tier)). Alert: ObsCostSpike.",
            "currencyUSD",
            _query(f"{_rate('ai_cost_usd_total', 'tier')} * 3600", "{{tier}}"),
        ),
        bargauge.Panel()
        .title("AI spend in the time range, by model and tier")
        .description("USD spent over the dashboard's time range.")
        .datasource(_DS)
        .unit("currencyUSD")
        .span(24)
        .height(8)
        .with_target(
            _query(
                f"sum by (ai_model, tier) (increase(ai_cost_usd_total{{{_SEL}}}[$__range]))",
                "{{ai_model}} {{tier}}",
            ).instant()
        ),
    ]


def _jobs() -> list[PanelBuilder]:
    runs = _rate("job_runs_total", "job_service_type")
    return [
        _series(
            "Jobs finished by state",
            "Worker jobs (obs.job) finished per second, by service type and status.",
            "ops",
            _query(
                _rate("job_runs_total", "job_service_type, job_status"),
                "{{job_service_type}} {{job_status}}",
            ),
            width=6,
        ),
        _series(
            "Jobs in progress",
            "Worker jobs running now, by service type.",
            "short",
            _query(f"sum by (job_service_type) (job_active{{{_SEL}}})", "{{job_service_type}}"),
            width=6,
        ),
        _series(
            "Job failure ratio",
            "Share of finished jobs that failed (a cancellation or a user-caused status is not a "
            "failure). Alert: ObsJobFailures (> 10%).",
            "percentunit",
            _query(
                _ratio(_rate("job_runs_total", "job_service_type", _FAILED), runs),
                "{{job_service_type}}",
            ),
            width=6,
        ),
        _series(
            "Job queue time",
            "p50, p95 and p99 of the time jobs waited between being queued and received. "
            "Alert: ObsJobQueueSlow (p95 > 30 s).",
            "s",
            *_quantiles("job_queue_time_seconds", "job_service_type", "{{job_service_type}}"),
            width=6,
        ),
    ]


def _pool() -> list[PanelBuilder]:
    return [
        _series(
            "Pool utilisation",
            "Connections checked out / (pool size + max overflow), per SQLAlchemy pool "
            "(bounded QueuePools only).",
            "percentunit",
            _query(f"max by (pool_name) (db_client_pool_utilization{{{_SEL}}})", "{{pool_name}}"),
            width=8,
        ),
        _series(
            "Pool connections",
            "Connections checked out, and the pool's size, per SQLAlchemy pool.",
            "short",
            _query(
                f"sum by (pool_name) (db_client_pool_checked_out{{{_SEL}}})",
                "checked out {{pool_name}}",
            ),
            _query(
                f"sum by (pool_name) (db_client_pool_size{{{_SEL}}})", "size {{pool_name}}", "B"
            ),
            width=8,
        ),
        _series(
            "Pool wait p95",
            "95th percentile of the time to obtain a pooled connection (waiting and "
            "connecting included).",
            "s",
            _query(
                _quantile(0.95, "db_client_pool_wait_time_seconds", "pool_name"), "{{pool_name}}"
            ),
            width=8,
        ),
    ]


def _breaker_states() -> list[model.ValueMapping]:
    states = {"0": ("closed", "green"), "1": ("half-open", "yellow"), "2": ("open", "red")}
    options = {
        value: model.ValueMappingResult(text=text, color=color, index=i)
        for i, (value, (text, color)) in enumerate(states.items())
    }
    return [model.ValueMap(options=options)]


def _telemetry() -> list[PanelBuilder]:
    return [
        _series(
            "Dropped telemetry by reason",
            "Records lost before export, per second, by reason (queue full, backend failing "
            "with the spool off, …). Alert: ObsTelemetryDropped.",
            "short",
            _query(_rate("obs_dropped_total", "reason"), "{{reason}}"),
            width=8,
        ).no_value("0 (nothing dropped)"),  # the counter appears with the first drop
        statetimeline.Panel()
        .title("Exporter circuit breaker")
        .description(
            "Per network exporter: closed (delivering), half-open (probing), open (backend down: "
            "records wait in the disk spool). Alert: ObsExporterBreakerOpen."
        )
        .datasource(_DS)
        .span(8)
        .height(8)
        .no_value("no network exporter")
        .mappings(_breaker_states())
        .thresholds(
            ThresholdsConfig()
            .mode(model.ThresholdsMode("absolute"))
            .steps(
                [
                    model.Threshold(value=None, color="green"),
                    model.Threshold(value=1, color="yellow"),
                    model.Threshold(value=2, color="red"),
                ]
            )
        )
        .with_target(
            _query(f"max by (exporter) (obs_exporter_breaker_state{{{_SEL}}})", "{{exporter}}")
        ),
        _series(
            "Disk spool",
            "Bytes waiting in each exporter's disk spool for its backend.",
            "bytes",
            _query(f"sum by (exporter) (obs_exporter_spool_bytes{{{_SEL}}})", "{{exporter}}"),
            width=8,
        ).no_value("no spooling exporter"),
    ]


def _runtime() -> list[PanelBuilder]:
    return [
        _series(
            "CPU",
            "CPU cores the service uses (user + system, every worker summed).",
            "short",
            _query(f"sum by (job) (rate(process_cpu_seconds_total{{{_SEL}}}{_RATE}))", "{{job}}"),
            width=8,
        ),
        _series(
            "Resident memory",
            "Resident set size of the service's live workers, summed.",
            "bytes",
            _query(f"sum by (job) (process_resident_memory_bytes{{{_SEL}}})", "{{job}}"),
            width=8,
        ),
        _series(
            "Event-loop delay and GC pauses, p99",
            "How late the asyncio loop ran a timer due now (code blocking the loop), and how "
            "long the garbage collector paused the process.",
            "s",
            _query(_quantile(0.99, "asyncio_eventloop_delay_seconds"), "loop delay p99"),
            _query(_quantile(0.99, "cpython_gc_duration_seconds"), "GC pause p99", "B"),
            width=8,
        ),
    ]


def dashboard() -> Dashboard:
    """The dashboard builder: HTTP, AI, jobs, database pool, process and telemetry health rows."""
    board: Dashboard = (
        Dashboard(TITLE)
        .uid(UID)
        .description("Services instrumented with obs-middleware, from its Prometheus metrics.")
        .tags(["obs-middleware", "prometheus"])
        .editable()
        .refresh("30s")
        .time("now-1h", "now")
        .timezone("browser")
        .with_variable(DatasourceVariable("datasource").label("Data source").type("prometheus"))
        .with_variable(
            QueryVariable("job")
            .label("Job")
            .datasource(_DS)
            .query("label_values(http_server_requests_total, job)")
            .definition("label_values(http_server_requests_total, job)")
            .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(model.VariableSort.ALPHABETICAL_ASC)
            .multi(True)
            .include_all(True)
            .all_value(".*")
        )
    )
    rows: list[tuple[str, list[PanelBuilder]]] = [
        ("HTTP", _http()),
        ("AI providers", _ai()),
        ("Jobs", _jobs()),
        ("Database pool", _pool()),
        ("Process and runtime", _runtime()),
        ("Telemetry pipeline", _telemetry()),
    ]
    for title, panels in rows:
        board = board.with_row(Row(title))
        for panel in panels:
            board = board.with_panel(panel)
    return board


def dashboard_json() -> dict[str, Any]:
    """The dashboard as the JSON document Grafana imports (panel ids numbered in order)."""
    doc: dict[str, Any] = json.loads(JSONEncoder(sort_keys=True).encode(dashboard().build()))
    for i, panel in enumerate(doc.get("panels", []), start=1):
        panel["id"] = i
    return doc


def render() -> str:
    """The shipped asset's text: ``dashboard_json()`` indented, with a final newline."""
    return json.dumps(dashboard_json(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
