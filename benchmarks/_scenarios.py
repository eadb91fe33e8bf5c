"""The suite's scenarios and the instrumentation configurations they run under: the registry.

Imported only inside a worker subprocess (one scenario x configuration per process), so a peer's
patches never leak into another configuration. ``build(scenario, config, workdir)`` returns a
``Bench`` (``scenarios/__init__.py``): ``run(n)`` does n iterations, ``flush()`` makes the
instrumentation export everything finished so far (charged to the timed region), ``emitted()``
counts what reached the exporter.

Every worker imports obs_middleware and its scenario's libraries before building anything, so the
baseline carries the same import footprint (GC traversal work) as the instrumented runs; a scenario
imports only what it uses (the span scenario neither Starlette nor SQLAlchemy), which keeps the
valgrind start-up short.

Where things live: one module per scenario in ``scenarios/``, the request workloads they share with
the overhead gates in ``workloads/``, the instrumentation handles in ``_peers.py``, the export
throughput paths (``export_path``, used by ``test_throughput.py``) in ``_export_paths.py``.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from _export_paths import EXPORT_PATHS, EXPORT_STAGES, export_path
from scenarios import Bench
from workloads import _emulator

__all__ = [
    "BASELINE",
    "EXPORT_PATHS",
    "EXPORT_STAGES",
    "EXTRA_CONFIGS",
    "ITEM",
    "LABELS",
    "SCENARIOS",
    "SPAN_CHILDREN",
    "SQL_BATCH",
    "Bench",
    "build",
    "cleanup",
    "dropped",
    "export_path",
]

SPAN_CHILDREN = 100  # child spans per root in the span scenario (scenarios/span.py)
SPAN_CHUNK = 50  # roots between flushes in the span scenario (see scenarios/span.py)
SQL_BATCH = 100  # queries per root span in the sql scenario (scenarios/sql.py)

# scenario -> (description, unit of one measured item, items per iteration, configs in order)
SCENARIOS: dict[str, tuple[str, str, int, tuple[str, ...]]] = {
    "asgi": (
        "Starlette GET /items/{item_id} -> small JSONResponse, app(scope, receive, send) direct",
        "us",
        1,
        ("bare", "obs", "otel", "otel-1span", "ddtrace"),
    ),
    "span": (
        f"nested child span + 3 attributes inside a root of {SPAN_CHILDREN} children",
        "ns",
        SPAN_CHILDREN,
        ("floor", "floor-export", "obs", "otel", "ddtrace"),
    ),
    "real": (
        "realistic request: 5 SQLAlchemy core queries (SQLite, StaticPool) + 50-item JSON list",
        "us",
        1,
        ("bare", "obs", "otel", "ddtrace"),
    ),
    "sql": (
        f'SQLAlchemy conn.execute(text("SELECT 1")).scalar(), in-memory SQLite, {SQL_BATCH} '
        "queries per root span (root charged to the queries)",
        "us",
        SQL_BATCH,
        ("bare", "obs", "otel", "ddtrace"),
    ),
    "litestar": (
        "Litestar GET /items/{item_id} -> small JSON, app(scope, receive, send) direct",
        "us",
        1,
        ("bare", "obs", "otel"),
    ),
    "ai": (
        "openai SDK chat.completions.create against the loopback emulator (other process, "
        "latency 0)",
        "us",
        1,
        ("bare", "obs", "ddtrace"),
    ),
}
# What one measured item is, for the report's column heads.
ITEM = {"span": "span", "sql": "query", "ai": "call"}
# Diagnostic configurations: not in the comparison tables, used by the instruction counts.
EXTRA_CONFIGS = {
    "asgi": ("obs-noexport",),
    "span": ("obs-noexport",),
    "real": ("obs-noexport", "obs-middleware-only"),
}
BASELINE = {
    "asgi": "bare",
    "span": "floor",
    "real": "bare",
    "sql": "bare",
    "litestar": "bare",
    "ai": "bare",
}

LABELS = {
    "bare": "bare (no instrumentation)",
    "floor": "floor: minimal pure-Python contextvar span",
    "floor-export": "floor + the least a jsonl record needs (15 keys, hex ids, RFC 3339, orjson)",
    "obs": "obs-middleware",
    "obs-noexport": "obs-middleware, export off (request-thread hot path only)",
    "obs-middleware-only": "obs-middleware, ObsMiddleware only (SQLAlchemy integration off)",
    "otel": "OpenTelemetry",
    "otel-1span": "OpenTelemetry, exclude_spans=[receive, send]",
    "ddtrace": "dd-trace-py",
}


def build(scenario: str, config: str, workdir: Path) -> Bench:
    """Build ``scenario`` under ``config`` (a key of ``SCENARIOS``/``EXTRA_CONFIGS``).

    Imports only that scenario's module: a worker never loads the libraries of another.
    """
    known = SCENARIOS[scenario][3] + EXTRA_CONFIGS.get(scenario, ())
    if config not in known:
        raise ValueError(f"unknown config {config!r} for {scenario!r} (known: {known})")
    module = importlib.import_module(f"scenarios.{scenario}")
    bench: Bench = module.build(config, workdir)
    if scenario == "span":
        bench.chunk = SPAN_CHUNK
    return bench


def cleanup() -> None:
    """Stop the helper processes this worker started."""
    _emulator.cleanup()


def dropped() -> float:
    """Records obs-middleware dropped so far in this process (all reasons)."""
    from obs_middleware._core.metrics import registry  # noqa: PLC0415

    snap = registry.snapshot().get("obs.dropped")
    return float(sum(snap.points.values())) if snap else 0.0  # type: ignore[arg-type]
