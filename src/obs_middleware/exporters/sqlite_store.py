"""The SQLite store's read side: figures over what ``SqliteExporter`` wrote, for ``obs report``
and ``obs dashboard``.

Every percentile is exact: computed from the stored rows (``percentile``), never from
histogram buckets. Rows are read sorted by the database and grouped here, so memory stays at one
group's durations.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from itertools import groupby
from typing import Any

import orjson

from .._core.status import NOT_FAILURES, USER_ERRORS
from .sqlite import COLUMNS, connect, row_to_record

__all__ = ["Filters", "Row", "Store", "fingerprint", "percentile", "short_labels"]

Row = dict[str, Any]

# Statuses of an AI call that are no service failure (as the ``ai.errors`` metric counts): the
# user-caused ones are counted apart (``_core/status.py``).
_AI_OK = NOT_FAILURES | USER_ERRORS
# Attribute keys a query span may carry to say where in the user's code it ran.
_LOCATION_KEYS = (
    ("code.filepath", "code.lineno", "code.function"),
    ("code.file", "code.line", "code.function"),
)


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


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Return the ``q``-th percentile (0 to 100) of ascending ``sorted_values``, exactly.

    Linear interpolation between closest ranks (numpy's default, ``statistics.quantiles(...,
    method="inclusive")``); 0.0 for no values.
    """
    n = len(sorted_values)
    if n == 0:
        return 0.0
    pos = (n - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, n - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def fingerprint(statement: str) -> str:
    """A short stable id of a statement's text (8 hex digits), to tell statements apart."""
    return hashlib.blake2b(statement.encode("utf-8", "replace"), digest_size=4).hexdigest()


def short_labels(texts: Sequence[str], width: int) -> list[str]:
    """``texts`` cut to ``width`` characters each, every different text still told apart.

    A long text keeps its start and its end (``SELECT … WHERE users.email = ?``: statements that
    share their first columns differ in their ``WHERE``). Texts that would still read the same
    show where they part (``SELECT ima…WHERE vector_probe(…``), and end with their
    ``fingerprint`` if even that is not enough.
    """
    flat = [" ".join(text.split()) for text in texts]
    labels = [_middle_cut(text, width) for text in flat]
    for indexes in _clashes(flat, labels):
        # Where they part: the common prefix of a group is that of its least and greatest text.
        lo, hi = min(flat[i] for i in indexes), max(flat[i] for i in indexes)
        split = next((n for n, (a, b) in enumerate(zip(lo, hi, strict=False)) if a != b), len(lo))
        for i in indexes:
            labels[i] = _window(flat[i], width, split)
    for indexes in _clashes(flat, labels):
        for i in indexes:
            tag = " #" + fingerprint(flat[i])
            labels[i] = _middle_cut(flat[i], max(width - len(tag), 2)) + tag
    return labels


def _clashes(texts: Sequence[str], labels: Sequence[str]) -> list[list[int]]:
    """Indexes of different texts given the same label, grouped by label."""
    by_label: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        by_label.setdefault(label, []).append(i)
    return [group for group in by_label.values() if len({texts[i] for i in group}) > 1]


def _middle_cut(text: str, width: int) -> str:
    if len(text) <= width:
        return text
    head = (width - 1) * 3 // 5
    tail = width - 1 - head
    return text[:head].rstrip() + "…" + (text[-tail:].lstrip() if tail > 0 else "")


def _window(text: str, width: int, split: int) -> str:
    """``text`` cut to ``width`` around ``split``: where it parts from texts sharing its start."""
    if len(text) <= width:
        return text
    head = width // 4
    start = max(split - width // 4, head)
    if start <= head:
        return text[: width - 1] + "…"
    rest = text[start : start + width - head - 1]
    if start + len(rest) < len(text):
        rest = rest[:-1] + "…"
    return text[:head] + "…" + rest


def _summary(durations: Sequence[float]) -> dict[str, float]:
    return {
        "p50": percentile(durations, 50),
        "p95": percentile(durations, 95),
        "p99": percentile(durations, 99),
        "max": durations[-1] if durations else 0.0,
    }


# (row key prefix, span attribute): the latency figures an AI call may carry (issue 17 item 10).
_AI_LATENCY = (
    ("ttft", "ai.time_to_first_token_ms"),
    ("tokens_per_s", "ai.output_tokens_per_s"),
    ("queue", "ai.queue_ms"),
    ("run", "ai.run_ms"),
)


def _latency(attrs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """p50/p95 of each latency figure over the calls that report it (None when none does)."""
    out: dict[str, Any] = {}
    for key, attr in _AI_LATENCY:
        values = sorted(
            float(v) for a in attrs if isinstance(v := a.get(attr), (int, float)) and v >= 0
        )
        out[f"{key}_p50"] = percentile(values, 50) if values else None
        out[f"{key}_p95"] = percentile(values, 95) if values else None
    out["streams"] = sum(1 for a in attrs if "ai.time_to_first_token_ms" in a)
    return out


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
                    **_summary(durations),
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
                    **_summary(durations),
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
                    "location": _location(attrs),
                    "system": attrs.get("db.system"),
                    "trace_id": slowest[3],
                    **_summary([r[1] for r in items]),
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
        ``_pool_peaks``), never below what the pool certainly reached.
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
                **_pool_peaks(m, count(m, "checkouts")),
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
            errors = sum(1 for r in items if r[5] not in _AI_OK)
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
                    **_summary([r[4] for r in items]),
                    **_latency(attrs),
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
                {"service_type": service_type, "state": state, "jobs": len(keys), **_summary(times)}
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


def _pool_peaks(m: dict[str, Row], checkouts: float) -> Row:
    """Peak checked out, overflow and utilisation of one pool from its sampled gauges.

    A sample misses a burst that ended before it, but not what the burst left behind: a bounded
    ``QueuePool`` (it reports ``utilization``) and a ``NullPool`` (size 0) open a connection only
    when every open one is checked out, so the most connections ever open at once were all in
    use at once, and the open count stays up until they are closed. And a pool checked out at
    all had one connection in use.
    """

    def peak(name: str) -> float | None:
        return m[name]["peak"] if name in m else None

    in_use = peak("checked_out")
    overflow = peak("overflow")
    utilization = peak("utilization")
    size = m["size"]["last"] if "size" in m else None
    derived = 1.0 if checkouts > 0 else 0.0
    if (utilization is not None or size == 0) and "open" in m:
        derived = max(derived, m["open"]["peak"])
    if derived > (in_use or 0.0):
        in_use = derived
        if size and overflow is not None:
            overflow = max(overflow, in_use - size)
        if utilization is not None:  # the samples' figure is below the truth: unknown, or this
            capacity = _capacity(m)
            utilization = max(utilization, in_use / capacity) if capacity else None
    return {"peak_checked_out": in_use, "peak_overflow": overflow, "peak_utilization": utilization}


def _capacity(m: dict[str, Row]) -> float | None:
    """The capacity (size + max overflow) of a bounded pool, from a sample with some in use."""
    if "checked_out" not in m or "utilization" not in m:
        return None
    used = dict(m["utilization"]["series"])
    for ts, out in m["checked_out"]["series"]:
        if out > 0 and used.get(ts, 0) > 0:
            return float(round(out / used[ts]))
    return None


def _location(attrs: dict[str, Any]) -> str | None:
    for file_key, line_key, func_key in _LOCATION_KEYS:
        if attrs.get(file_key):
            where = f"{attrs[file_key]}:{attrs.get(line_key) or '?'}"
            return f"{where} in {attrs[func_key]}" if attrs.get(func_key) else where
    value = attrs.get("code.location")
    return str(value) if value else None
