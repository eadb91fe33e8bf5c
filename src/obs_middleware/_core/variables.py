"""Every environment variable obs-middleware reads, and the table docs/CONFIGURATION.md is.

The options of ``configure()`` and their ``OBS_*`` variables are ``config.SETTINGS``; the variables
read elsewhere (exporters, delivery, the SQLAlchemy integration, the CLI) are declared here, next
to the module that reads each. ``markdown()`` renders both tables; tests/_core/test_variables.py
keeps docs/CONFIGURATION.md equal to it, every variable named in ``src/`` declared, and every
declared one read where it says. Regenerate with::

    python -m obs_middleware._core.variables > docs/CONFIGURATION.md
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .config import SETTINGS, Config

__all__ = ["OTHER_VARIABLES", "Variable", "markdown"]


@dataclass(frozen=True)
class Variable:
    """A variable read outside ``configure()``: by an exporter, the delivery layer or the CLI."""

    name: str
    read_by: str  # module path under src/obs_middleware/
    default: str  # in words; "" for none
    doc: str


OTHER_VARIABLES: tuple[Variable, ...] = (
    Variable(
        "OBS_EXPORT_TIMEOUT_S",
        "_delivery_options.py",
        "`5`",
        "Network exporters (otlp, tinybird, clickhouse, http): limit of one request, and the "
        "time the retries of one batch may take (s).",
    ),
    Variable(
        "OBS_SPOOL_DIR",
        "_delivery_options.py",
        "`$XDG_STATE_HOME/obs-middleware/spool` (else `~/.local/state/...`, else "
        "`obs-middleware-<uid>/spool` in the temp directory), one folder per exporter and "
        "destination",
        "Network exporters keep the batches a backend did not take on disk here (one subfolder "
        "per exporter) and replay them, in order, once it answers; shared safely by the "
        "processes of a host. `off`: no spool, such batches are dropped, counted.",
    ),
    Variable(
        "OBS_SPOOL_MAX_BYTES",
        "_delivery_options.py",
        "`268435456` (256 MiB)",
        "Spool size cap, across every process sharing the folder.",
    ),
    Variable(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "exporters/otlp.py",
        "`http://localhost:4318` (gRPC: `http://localhost:4317`)",
        "The OTLP collector of exporter `otlp` without a URL (the OpenTelemetry variable).",
    ),
    Variable(
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "exporters/otlp.py",
        "`http/protobuf`",
        "`grpc`: exporter `otlp` sends over OTLP/gRPC (extra `otlp-grpc`), as does a "
        "`otlp:grpc://host:4317` spec (`grpcs://`: TLS). Another value is warned about and "
        "HTTP is used.",
    ),
    Variable(
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "exporters/otlp.py",
        "",
        "As `OTEL_EXPORTER_OTLP_PROTOCOL` (read first): the protocol of exporter `otlp`.",
    ),
    Variable(
        "OBS_PROMETHEUS_HOST",
        "exporters/prometheus.py",
        "`127.0.0.1`",
        "Address the `prometheus` exporter's own `/metrics` server binds (`0.0.0.0`: every "
        "interface).",
    ),
    Variable(
        "OBS_PROMETHEUS_MULTIPROC_DIR",
        "exporters/prometheus.py",
        "under `obs run`: a fresh private folder in the temp directory, removed when the "
        "command's processes have exited",
        "A folder shared by the worker processes of one app (emptied at start): each writes its "
        "metrics there and `/metrics` serves the sum. Falls back to `PROMETHEUS_MULTIPROC_DIR`.",
    ),
    Variable(
        "PROMETHEUS_MULTIPROC_DIR",
        "exporters/prometheus.py",
        "",
        "`prometheus_client`'s variable, used when `OBS_PROMETHEUS_MULTIPROC_DIR` is unset.",
    ),
    Variable(
        "OBS_METRICS_PATH",
        "cli/_autorun.py",
        "`/metrics`",
        "`obs run`: the path at which the middleware it inserts answers Prometheus scrapes with "
        "the metrics of every worker (untraced, ahead of the app's own routes); empty: none.",
    ),
    Variable(
        "TB_TOKEN",
        "exporters/tinybird.py",
        "",
        "Tinybird token of exporter `tinybird` (required, unless given in code).",
    ),
    Variable(
        "TB_HOST",
        "exporters/tinybird.py",
        "`https://api.tinybird.co`",
        "Tinybird API host of exporter `tinybird`.",
    ),
    Variable(
        "OBS_CLICKHOUSE_URL",
        "exporters/clickhouse.py",
        "`http://127.0.0.1:8123`",
        "ClickHouse HTTP interface of exporter `clickhouse` without a URL.",
    ),
    Variable(
        "OBS_CLICKHOUSE_TABLE",
        "exporters/clickhouse.py",
        "`obs_events`",
        "Table exporter `clickhouse` inserts into.",
    ),
    Variable(
        "OBS_HTTP_URL",
        "exporters/http.py",
        "",
        "Collector URL of exporter `http` without one (`http:URL`): required one way or the other.",
    ),
    Variable(
        "OBS_HTTP_HEADERS",
        "exporters/http.py",
        "`{}`",
        "Extra request headers of exporter `http`, a JSON object (an auth token).",
    ),
    Variable(
        "OBS_HTTP_TAG",
        "exporters/http.py",
        "",
        "Appended to exporter `http`'s URL path, where Fluent Bit's HTTP input reads its tag.",
    ),
    Variable(
        "OBS_STORE",
        "exporters/sqlite.py",
        "`obs.db`",
        "The SQLite store of exporter `sqlite` without a path, and of `obs report`, "
        "`obs dashboard`, `obs demo`.",
    ),
    Variable(
        "OBS_DB_SLOW_QUERY_MS",
        "integrations/sqlalchemy/__init__.py",
        "`100`",
        "SQLAlchemy: a statement slower than this (ms) gets its code location, a "
        "`db.slow_query` event and a warning; `instrument_sqlalchemy(slow_query_ms=)` per engine.",
    ),
    Variable(
        "OBS_DB_COMMENTER",
        "integrations/sqlalchemy/__init__.py",
        "`off`",
        "SQLAlchemy: append `/*traceparent='…'*/` to statements (sqlcommenter); "
        "`instrument_sqlalchemy(commenter=)` per engine.",
    ),
)

_HEADER = """\
# Configuration

<!-- Generated from the code: python -m obs_middleware._core.variables > docs/CONFIGURATION.md
     (src/obs_middleware/_core/config.py SETTINGS and _core/variables.py); a test keeps it equal.
     Do not edit by hand. -->

Every option of `obs.configure()` and every environment variable obs-middleware reads.

An argument given to `configure()` wins over its variable, which wins over the default. An invalid
argument raises `ValueError` naming the option; an invalid variable is warned about once and its
default kept, so a typo in a deployment never takes the app down. Until `configure()` is called,
the first finished span configures from the variables alone.
"""


def _default(option: str) -> Any:
    group, _, name = option.rpartition(".")
    config = Config()
    return getattr(getattr(config, group) if group else config, name)


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "`on`" if value else "`off`"
    if value is None or value in ((), {}):
        return ""
    if isinstance(value, tuple):
        return "`" + ",".join(str(v) for v in value) + "`"
    return f"`{value}`"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") or "—" for c in cells) + " |"


def markdown() -> str:
    """docs/CONFIGURATION.md: the ``configure()`` options, then the other variables."""
    lines = [_HEADER, "## `configure()` options", ""]
    lines.append(
        "Groups are option objects: `configure(sampling=obs.SamplingOptions(ratio=0.1))`. "
        "Options without a variable are set in code only."
    )
    lines += ["", "| option | variable | default | what it does |", "|---|---|---|---|"]
    for s in SETTINGS:
        variable = f"`{s.variable}`" if s.variable else "(code only)"
        default = s.default_doc or _shown(_default(s.option))
        lines.append(_row([f"`{s.option}`", variable, default, s.doc]))
    lines += ["", "## Other variables", ""]
    lines.append("Read by one exporter, the delivery layer, an integration or the CLI.")
    lines += ["", "| variable | read by | default | what it does |", "|---|---|---|---|"]
    for v in OTHER_VARIABLES:
        lines.append(_row([f"`{v.name}`", f"`{v.read_by}`", v.default, v.doc]))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
