"""The SQLite store's read side: figures over what ``SqliteExporter`` wrote, for ``obs report``
and ``obs dashboard``.

Every percentile is exact: computed from the stored rows (``percentile``), never from
histogram buckets. Rows are read sorted by the database and grouped here, so memory stays at one
group's durations.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from itertools import groupby
from typing import Any

import orjson

from .._core.status import USER_ERRORS, is_service_failure
from ._store_figures import (
    fingerprint,
    latency,
    location,
    pool_peaks,
    short_labels,
    summary,
)
from .sqlite import COLUMNS, connect, row_to_record

__all__ = ["Filters", "Row", "Store", "fingerprint", "short_labels"]

Row = dict[str, Any]


class Filters:
    """What every figure is restricted to: a service, a time window (epoch µs)."""

    def __init__(
        self, service: str | None = None, since_us: int | None = None, until_us: int | None = None
    ) -> None:
        self.service = service
        self.since_us = since_us
        self.until_us = until_us

    def sql(self, params: list[Any]) -> str:
        """``AND …`` clauses for the records table (appending their parameters)."""
        clauses = []
        if self.service:
            clauses.append("service = ?")
            params.append(self.service)
        if self.since_us is not None:
            clauses.append("start_us >= ?")
            params.append(self.since_us)
        if self.until_us is not None:
            clauses.append("start_us < ?")
            params.append(self.until_us)
        return "".join(f" AND {c}" for c in clauses)


def _attrs(text: str | None) -> dict[str, Any]:
    return orjson.loads(text) if text else {}


class Store:
    """A read-only view of one store file."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.conn: sqlite3.Connection = connect(path)

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()

    def _rows(self, sql: str, params: Iterable[Any] = ()) -> Iterator[sqlite3.Row]:
        return iter(self.conn.execute(sql, tuple(params)))

    # -- the store as a whole ----------------------------------------------------------------------
    def services(self) -> list[str]:
        """Services present in the store."""
        return [r[0] for r in self._rows("SELECT DISTINCT service FROM records ORDER BY 1")]

    def time_range(self, f: Filters) -> tuple[int | None, int | None]:
        """First and last record start (epoch µs) within ``f``."""
        params: list[Any] = []
        row = self.conn.execute(
            "SELECT min(start_us), max(start_us) FROM records WHERE 1=1" + f.sql(params), params
        ).fetchone()
        return row[0], row[1]

    # -- HTTP --------------------------------------------------------------------------------------
    def _server_spans(self, f: Filters, columns: str, order: str) -> Iterator[sqlite3.Row]:
        params: list[Any] = []
        where = f.sql(params)
        return self._rows(
            f"SELECT {columns} FROM records WHERE type = 'span' AND span_kind = 'server'"
            f"{where} ORDER BY {order}",
            params,
        )

    def routes(self, f: Filters) -> list[Row]:
        """Per method and route: requests, errors, error rate, p50/p95/p99/max duration (ms)."""
        rows = self._server_spans(
            f,
            "http_method, coalesce(http_route, '(unmatched)') AS route, duration_ms, status",
            "http_method, route, duration_ms",
        )
        out = []
        for (method, route), group in groupby(rows, key=lambda r: (r[0], r[1])):
            items = list(group)
            durations = [r[2] for r in items]
            errors = sum(1 for r in items if r[3] == "error")
            out.append(
                {
                    "method": method,
                    "route": route,
                    "requests": len(items),
                    "errors": errors,
                    "error_rate": errors / len(items),
                    **summary(durations),
                }
            )
        out.sort(key=lambda r: -r["requests"])
        return out

    def timeseries(self, f: Filters, buckets: int = 60) -> dict[str, Any]:
        """Request rate, error rate and latency percentiles per time bucket."""
        first, last = self.time_range(f)
        if first is None or last is None:
            return {"bucket_s": 0, "points": []}
        width = max((last - first) // buckets + 1, 50_000)  # µs; short runs still get a curve
        points: dict[int, list[tuple[float, str]]] = {}
        for start_us, duration, status in self._server_spans(
            f, "start_us, duration_ms, status", "start_us"
        ):
            points.setdefault((start_us - first) // width, []).append((duration, status))
        series = []
        for i in range((last - first) // width + 1):
            items = points.get(i, [])
            durations = sorted(d for d, _ in items)
            errors = sum(1 for _, s in items if s == "error")
            series.append(
                {
                    "t_us": first + i * width,
                    "requests": len(items),
                    "rate": len(items) / (width / 1e6),
                    "error_rate": errors / len(items) if items else 0.0,
                    **summary(durations),
                }
            )
        return {"bucket_s": width / 1e6, "points": series}

    # -- database ----------------------------------------------------------------------------------
    def slow_queries(self, f: Filters, limit: int = 10) -> list[Row]:
        """Statements by slowest call: calls, p50/p95/max (ms) and the slowest call's location.

        One row per statement text, which is already the query's shape (the integrations strip
        its literals and collapse ``IN`` lists); ``fingerprint`` names it in a few characters.
        """
        params: list[Any] = []
        where = f.sql(params)
        rows = self._rows(
            "SELECT db_statement, duration_ms, attributes, trace_id FROM records"
            f" WHERE type = 'span' AND db_statement IS NOT NULL{where}"
            " ORDER BY db_statement, duration_ms",
            params,
        )
        out = []
        for statement, group in groupby(rows, key=lambda r: r[0]):
            items = list(group)
            slowest = items[-1]
            attrs = _attrs(slowest[2])
            out.append(
                {
                    "statement": statement,
                    "fingerprint": fingerprint(statement),
                    "calls": len(items),
                    "location": location(attrs),
                    "system": attrs.get("db.system"),
                    "trace_id": slowest[3],
                    **summary([r[1] for r in items]),
                }
            )
        out.sort(key=lambda r: -r["max"])
        return out[:limit]

    def gauges(self, f: Filters, match: str = "pool") -> list[Row]:
        """Last and peak value of each sampled counter or gauge named like ``match``."""
        params: list[Any] = [f"%{match}%"]
        where = ""
        if f.service:
            where += " AND service = ?"
            params.append(f.service)
        rows = self._rows(
            f"SELECT name, labels, value, ts_us FROM metrics WHERE name LIKE ?{where}"
            " ORDER BY name, labels, ts_us",
            params,
        )
        out = []
        for (name, labels), group in groupby(rows, key=lambda r: (r[0], r[1])):
            items = list(group)
            out.append(
                {
                    "name": name,
                    "labels": orjson.loads(labels),
                    "last": items[-1][2],
                    "peak": max(r[2] for r in items),
                    "series": [[r[3], r[2]] for r in items],
                }
            )
        return out

    def pools(self, f: Filters) -> list[Row]:
        """Summarise each connection pool: size, peaks, checkouts, timeouts.

        The gauges are samples (every few seconds), and a burst of checkouts returns its
        connections between two: the peaks are also read from what the samples keep (see
        ``_store_figures.pool_peaks``), never below what the pool certainly reached.
        """
        by_pool: dict[str, dict[str, Row]] = {}
        for g in self.gauges(f, "db.client.pool."):
            pool = str(g["labels"].get("pool.name", "?"))
            by_pool.setdefault(pool, {})[g["name"].removeprefix("db.client.pool.")] = g

        def count(metrics: dict[str, Row], name: str) -> float:
            # A counter has no sample until its first increment: absent means none happened.
            return float(metrics[name]["last"]) if name in metrics else 0.0

        return [
            {
                "pool": pool,
                "size": m["size"]["last"] if "size" in m else None,
                **pool_peaks(m, count(m, "checkouts")),
                "checkouts": count(m, "checkouts"),
                "timeouts": count(m, "timeouts"),
                "connections_created": count(m, "connections.created"),
            }
            for pool, m in sorted(by_pool.items())
        ]

    def dropped(self, f: Filters) -> list[Row]:
        """Telemetry dropped before export, by reason (the last ``obs.dropped`` sample)."""
        return [
            {"reason": g["labels"].get("reason", "?"), "count": g["last"]}
            for g in self.gauges(f, "obs.dropped")
            if g["name"] == "obs.dropped"
        ]

    # -- AI ----------------------------------------------------------------------------------------
    def _ai_spans(self, f: Filters) -> list[sqlite3.Row]:
        params: list[Any] = []
        where = f.sql(params)
        return self.conn.execute(
            "SELECT ai_provider, ai_model, user_id, tier, duration_ms, status, cost_usd,"
            " attributes FROM records"
            f" WHERE type = 'span' AND ai_provider IS NOT NULL{where} ORDER BY duration_ms",
            params,
        ).fetchall()

    def ai(self, f: Filters, by: Sequence[str] = ("provider", "model")) -> list[Row]:
        """AI calls grouped by any of provider, model, user, tier: calls, errors, latency, cost.

        Latency as LLM and image teams read it, over the calls that report each figure (None
        when none does): ``ttft_p50``/``ttft_p95`` (time to first token, ms; ``streams`` counts
        the calls that have it), ``tokens_per_s_p50``/``_p95`` (output tokens per second),
        ``queue_p50``/``_p95`` and ``run_p50``/``_p95`` (provider queue and run time, ms).

        The model is the one each call asked for (``ai.model``), so a model's failed calls count
        against it; grouped by model, ``response_models`` lists the names its answers gave
        (``ai.response_model``: dated snapshots). An error is a service failure, any status but
        ok, cancelled and the user-caused ones (``invalid_input``, ``content_violation``: counted
        in ``user_errors``), as the ``ai.errors`` metric and the failure alert count them.
        """
        index = {"provider": 0, "model": 1, "user": 2, "tier": 3}
        groups: dict[tuple[Any, ...], list[sqlite3.Row]] = {}
        for row in self._ai_spans(f):
            groups.setdefault(tuple(row[index[k]] for k in by), []).append(row)
        out = []
        for key, items in groups.items():
            attrs = [_attrs(r[7]) for r in items]
            errors = sum(1 for r in items if is_service_failure(r[5]))
            user_errors = sum(1 for r in items if r[5] in USER_ERRORS)
            extra: Row = {}
            if "model" in by:
                answered = {a.get("ai.response_model") for a in attrs}
                extra["response_models"] = sorted(str(m) for m in answered if m)
            out.append(
                {
                    **dict(zip(by, key, strict=True)),
                    **extra,
                    "calls": len(items),
                    "errors": errors,
                    "error_rate": errors / len(items),
                    "user_errors": user_errors,
                    "input_tokens": sum(a.get("ai.input_tokens") or 0 for a in attrs),
                    "output_tokens": sum(a.get("ai.output_tokens") or 0 for a in attrs),
                    "images": sum(a.get("ai.image_count") or 0 for a in attrs),
                    "cost_usd": sum(r[6] or 0.0 for r in items),
                    "cost_unknown": sum(
                        1
                        for r, a in zip(items, attrs, strict=True)
                        if r[6] is None and a.get("cost.unknown")
                    ),
                    **summary([r[4] for r in items]),
                    **latency(attrs),
                }
            )
        out.sort(key=lambda r: (-r["cost_usd"], -r["calls"]))
        return out

    # -- jobs --------------------------------------------------------------------------------------
    def jobs(self, f: Filters) -> list[Row]:
        """Count jobs per service type by last known state, with duration percentiles.

        The state comes from ``job.*`` events (queued, received, started, completed, failed) and
        job spans; durations from the job spans.
        """
        params: list[Any] = []
        where = f.sql(params)
        rows = self._rows(
            "SELECT name, type, job_state, attributes, duration_ms FROM records"
            " WHERE (job_state IS NOT NULL OR (type = 'event' AND name IN"
            " ('job.queued', 'job.received', 'job.started', 'job.completed', 'job.failed')))"
            f"{where} ORDER BY start_us, id",
            params,
        )
        last: dict[tuple[str, Any], str] = {}
        durations: dict[tuple[str, Any], float] = {}
        for i, (name, kind, state, attributes, duration) in enumerate(rows):
            attrs = _attrs(attributes)
            key = (str(attrs.get("job.service_type", "?")), attrs.get("job.id", i))
            if kind == "span":
                if duration is not None:
                    durations[key] = duration
                last.setdefault(key, state)  # a span starts before its job's events
            else:
                last[key] = name.removeprefix("job.")
        groups: dict[tuple[str, str], list[tuple[str, Any]]] = {}
        for key, state in last.items():
            groups.setdefault((key[0], state), []).append(key)
        out: list[Row] = []
        for (service_type, state), keys in sorted(groups.items()):
            times = sorted(durations[k] for k in keys if k in durations)
            out.append(
                {"service_type": service_type, "state": state, "jobs": len(keys), **summary(times)}
            )
        return out

    # -- traces ------------------------------------------------------------------------------------
    def traces(
        self,
        f: Filters,
        *,
        route: str | None = None,
        status: str | None = None,
        user: str | None = None,
        min_ms: float | None = None,
        name: str | None = None,
        limit: int = 100,
    ) -> list[Row]:
        """Root spans (newest first) matching the filters, with span count and AI cost per trace."""
        params: list[Any] = []
        where = f.sql(params)
        if route:
            where += " AND http_route = ?"
            params.append(route)
        if status == "error":
            where += " AND status != 'ok'"
        elif status:
            where += " AND status = ?"
            params.append(status)
        if user:
            where += " AND user_id = ?"
            params.append(user)
        if min_ms is not None:
            where += " AND duration_ms >= ?"
            params.append(min_ms)
        if name:
            where += " AND name LIKE ?"
            params.append(f"%{name}%")
        roots = self.conn.execute(
            "SELECT trace_id, name, start, start_us, duration_ms, status, user_id, tier,"
            " http_route, http_status_code FROM records"
            " WHERE type = 'span' AND (parent_id IS NULL OR span_kind = 'server')"
            f"{where} ORDER BY start_us DESC LIMIT ?",
            [*params, limit],
        ).fetchall()
        ids = [r[0] for r in roots]
        stats: dict[str, tuple[int, float]] = {}
        if ids:
            marks = ", ".join("?" * len(ids))
            for trace_id, spans, cost in self.conn.execute(
                "SELECT trace_id, count(*),"
                " sum(CASE WHEN type = 'span' AND ai_provider IS NOT NULL THEN cost_usd END)"
                f" FROM records WHERE trace_id IN ({marks}) GROUP BY trace_id",
                ids,
            ):
                stats[trace_id] = (spans, cost or 0.0)
        keys = ("trace_id", "name", "start", "start_us", "duration_ms", "status", "user_id",
                "tier", "route", "status_code")  # fmt: skip
        return [
            {
                **dict(zip(keys, r, strict=True)),
                "records": stats.get(r[0], (0, 0.0))[0],
                "cost_usd": stats.get(r[0], (0, 0.0))[1],
            }
            for r in roots
        ]

    def trace(self, trace_id: str) -> list[Row]:
        """Every record of one trace, in start order, as exported (plus ``start_us``)."""
        rows = self.conn.execute(
            f"SELECT {', '.join(COLUMNS)} FROM records WHERE trace_id = ? ORDER BY start_us, id",
            (trace_id,),
        ).fetchall()
        out = []
        for row in rows:
            rec = row_to_record(row)
            rec["start_us"] = row["start_us"]
            out.append(rec)
        return out

    def choices(self, f: Filters) -> dict[str, list[Any]]:
        """Distinct values for the dashboard's filter menus."""
        params: list[Any] = []
        where = f.sql(params)

        def distinct(column: str) -> list[Any]:
            return [
                r[0]
                for r in self.conn.execute(
                    f"SELECT DISTINCT {column} FROM records WHERE {column} IS NOT NULL{where}"
                    " ORDER BY 1",
                    params,
                )
            ]

        return {
            "services": self.services(),
            "routes": distinct("http_route"),
            "users": distinct("user_id"),
            "models": distinct("ai_model"),
        }
