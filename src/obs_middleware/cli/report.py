"""``obs report``: terminal tables from the SQLite store.

Requests and error rate per route with exact p50/p95/p99, the slowest queries with their code
location (each statement told apart, however long), connection pool gauges and peaks, AI calls,
error rate and cost by provider/model (the model asked for; the snapshots that answered beside
it; AI cost also by user and by tier), AI latency by provider/model (time to first token and
output tokens per second of streams, queue and run time of image providers that report them),
jobs by state, and dropped telemetry. Costs keep their significant digits (``$0.000036``).
``--json`` prints the same figures as one JSON document.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

import orjson

from ..exporters.sqlite_store import Filters, Row, Store, short_labels
from ._progress import after
from ._stats import table, usd
from ._store import problem

__all__ = ["figures", "render", "run"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
_STATEMENT_WIDTH = 48


def parse_since(text: str | None, now_s: float | None = None) -> int | None:
    """``"15m"``/``"2h"``/``"7d"`` ago as epoch µs (None for None)."""
    if not text:
        return None
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", text.strip())
    if m is None:
        raise ValueError(f"--since expects a duration such as 30s, 15m, 2h or 7d, not {text!r}")
    now = time.time() if now_s is None else now_s
    return int((now - float(m.group(1)) * _UNITS[m.group(2)]) * 1_000_000)


def figures(store: Store, f: Filters) -> dict[str, Any]:
    """Every figure the report shows, as plain data."""
    first, last = store.time_range(f)
    by_model = store.ai(f, ("provider", "model"))
    return {
        "services": [f.service] if f.service else store.services(),
        "first_us": first,
        "last_us": last,
        "routes": store.routes(f),
        "slow_queries": store.slow_queries(f),
        "pools": store.pools(f),
        "ai_by_model": by_model,
        "ai_latency": [a for a in by_model if any(a[k] is not None for k in _LATENCY_KEYS)],
        "ai_by_user": store.ai(f, ("user", "tier")),
        "ai_by_tier": store.ai(f, ("tier",)),
        "jobs": store.jobs(f),
        "dropped": store.dropped(f),
    }


def _ms(value: float) -> float:
    return round(value, 2)


def _pct(rate: float) -> str:
    return f"{100 * rate:.1f} %"


def _stamp(us: int | None) -> str:
    if us is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(us / 1e6))


def _route_row(r: Row) -> list[object]:
    return [
        f"{r['method']} {r['route']}", r["requests"], r["errors"], _pct(r["error_rate"]),
        _ms(r["p50"]), _ms(r["p95"]), _ms(r["p99"]), _ms(r["max"]),
    ]  # fmt: skip


def _query_row(q: Row) -> list[object]:
    return [
        q["label"], q["calls"], _ms(q["p50"]), _ms(q["p95"]), _ms(q["max"]), q["location"] or "-",
    ]  # fmt: skip


def _pool_row(p: Row) -> list[object]:
    utilization = p["peak_utilization"]
    return [
        p["pool"], _int(p["size"]), _int(p["peak_checked_out"]), _int(p["peak_overflow"]),
        "-" if utilization is None else _pct(utilization), _int(p["checkouts"]),
        _int(p["timeouts"]), _int(p["connections_created"]),
    ]  # fmt: skip


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)


_LATENCY_KEYS = ("ttft_p50", "tokens_per_s_p50", "queue_p50", "run_p50")


def _opt_ms(value: float | None) -> object:
    return "-" if value is None else _ms(value)


def _latency_row(a: Row) -> list[object]:
    rate = a["tokens_per_s_p50"]
    return [
        a["provider"], a["model"] or "-", a["streams"], _opt_ms(a["ttft_p50"]),
        _opt_ms(a["ttft_p95"]), "-" if rate is None else round(rate, 1),
        _opt_ms(a["queue_p50"]), _opt_ms(a["queue_p95"]), _opt_ms(a["run_p50"]),
        _opt_ms(a["run_p95"]),
    ]  # fmt: skip


def _model_row(a: Row) -> list[object]:
    answered = ", ".join(m for m in a["response_models"] if m != a["model"]) or "-"
    return [
        a["provider"], a["model"] or "-", answered, a["calls"], a["errors"],
        _pct(a["error_rate"]), _ms(a["p50"]), _ms(a["p95"]), a["input_tokens"],
        a["output_tokens"], a["images"], usd(a["cost_usd"]),
    ]  # fmt: skip


# (title, figures key, column headers, row builder)
_SECTIONS: list[tuple[str, str, list[str], Callable[[Row], list[object]]]] = [
    (
        "Requests by route",
        "routes",
        ["route", "requests", "errors", "error rate", "p50 ms", "p95 ms", "p99 ms", "max ms"],
        _route_row,
    ),
    (
        "Slowest queries",
        "slow_queries",
        ["statement", "calls", "p50 ms", "p95 ms", "max ms", "slowest call at"],
        _query_row,
    ),
    (
        "Connection pools",
        "pools",
        [
            *("pool", "size", "peak in use", "peak overflow", "peak utilisation", "checkouts"),
            *("timeouts", "connections opened"),
        ],
        _pool_row,
    ),
    (
        "AI calls by provider and model",
        "ai_by_model",
        [
            "provider",
            "model",
            "answered as",
            "calls",
            "errors",
            "error rate",
            "p50 ms",
            "p95 ms",
            "tokens in",
            "tokens out",
            "images",
            "cost",
        ],
        _model_row,
    ),
    (
        "AI latency by provider and model",
        "ai_latency",
        [
            *("provider", "model", "streams", "first token p50 ms", "first token p95 ms"),
            *("tokens/s p50", "queue p50 ms", "queue p95 ms", "run p50 ms", "run p95 ms"),
        ],
        _latency_row,
    ),
    (
        "AI cost by user",
        "ai_by_user",
        ["user", "tier", "calls", "cost"],
        lambda a: [a["user"] or "-", a["tier"] or "-", a["calls"], usd(a["cost_usd"])],
    ),
    (
        "AI cost by tier",
        "ai_by_tier",
        ["tier", "calls", "cost"],
        lambda a: [a["tier"] or "-", a["calls"], usd(a["cost_usd"])],
    ),
    (
        "Jobs by state",
        "jobs",
        ["job type", "state", "jobs", "p50 ms", "p95 ms", "max ms"],
        lambda j: [
            j["service_type"],
            j["state"],
            j["jobs"],
            _ms(j["p50"]),
            _ms(j["p95"]),
            _ms(j["max"]),
        ],
    ),
    (
        "Dropped telemetry",
        "dropped",
        ["reason", "records"],
        lambda d: [d["reason"], int(d["count"])],
    ),
]


def render(data: dict[str, Any], path: str) -> str:
    """Render the figures as text tables."""
    head = (
        f"obs report — {path}  services: {', '.join(data['services']) or '-'}  "
        f"from {_stamp(data['first_us'])} to {_stamp(data['last_us'])}"
    )
    queries = data["slow_queries"]
    labels = short_labels([q["statement"] or "" for q in queries], _STATEMENT_WIDTH)
    shown = [{**q, "label": label} for q, label in zip(queries, labels, strict=True)]
    data = {**data, "slow_queries": shown}
    tables = [
        table(headers, [build(row) for row in data[key]], title)
        for title, key, headers, build in _SECTIONS
    ]
    return "\n\n".join([head, *tables])


def report(path: str, f: Filters, out: TextIO | None = None, *, as_json: bool = False) -> None:
    """Print the report for the store at ``path``."""
    store = Store(path)
    try:
        data = figures(store, f)
    finally:
        store.close()
    stream = out or sys.stdout
    if as_json:
        stream.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        stream.write(render(data, path) + "\n")


def run(args: argparse.Namespace) -> int:
    """``obs report``."""
    try:
        f = Filters(args.service, parse_since(args.since))
    except ValueError as exc:
        print(f"obs report: {exc}", file=sys.stderr)
        return 2
    trouble = problem(args.store)
    if trouble is not None:
        print(f"obs report: {trouble}", file=sys.stderr)
        return 1
    with after(1.0, f"obs report: reading {args.store} ({_size(args.store)})…"):
        report(args.store, f, as_json=args.json)
    return 0


def _size(path: str) -> str:
    size = os.path.getsize(path)
    return f"{size / 1e6:,.1f} MB" if size >= 1e6 else f"{size / 1e3:,.0f} kB"
