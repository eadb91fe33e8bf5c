"""The dashboard's web app: JSON endpoints over the store, and the static page that draws them.

Every endpoint opens the store read-only for the request (SQLite connections are cheap and this
keeps threads apart), and reads the same figures as ``obs report``. The time window is relative to
the newest record, so a store written an hour ago still shows its data; ``live`` refresh simply
polls.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..exporters.sqlite_store import Filters, Store, short_labels

__all__ = ["create_app", "is_loopback", "serve"]

_STATIC = Path(__file__).parent / "static"
_MAX_TRACES = 500
_LABEL_WIDTH = 26  # characters of a bar label (app.js barChart)


def _filters(store: Store, request: Request) -> Filters:
    """Service and window (``window`` seconds before the newest record; absent = everything)."""
    params = request.query_params
    f = Filters(params.get("service") or None)
    window = params.get("window")
    if window and window != "all":
        _, last = store.time_range(f)
        if last is not None:
            f.since_us = last - int(float(window) * 1_000_000)
    return f


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


def _overview(store: Store, f: Filters, request: Request) -> dict[str, Any]:
    routes = store.routes(f)
    requests = sum(r["requests"] for r in routes)
    errors = sum(r["errors"] for r in routes)
    ai = store.ai(f, ("provider",))
    first, last = store.time_range(f)
    return {
        "first_us": first,
        "last_us": last,
        "requests": requests,
        "error_rate": errors / requests if requests else 0.0,
        "ai_calls": sum(a["calls"] for a in ai),
        "cost_usd": sum(a["cost_usd"] for a in ai),
        "dropped": sum(d["count"] for d in store.dropped(f)),
        "routes": routes,
        "series": store.timeseries(f),
    }


def _cost(store: Store, f: Filters, request: Request) -> dict[str, Any]:
    return {
        "by_user": store.ai(f, ("user", "tier")),
        "by_model": store.ai(f, ("provider", "model")),
        "by_tier": store.ai(f, ("tier",)),
    }


def _database(store: Store, f: Filters, request: Request) -> dict[str, Any]:
    queries = store.slow_queries(f, 12)
    labels = short_labels([q["statement"] or "" for q in queries], _LABEL_WIDTH)
    for query, label in zip(queries, labels, strict=True):
        query["label"] = label
    return {
        "slow_queries": queries,
        "pools": store.gauges(f, "db.client.pool"),
        "pool_peaks": store.pools(f),
    }


def _jobs(store: Store, f: Filters, request: Request) -> dict[str, Any]:
    return {"jobs": store.jobs(f), "dropped": store.dropped(f)}


def _meta(store: Store, f: Filters, request: Request) -> dict[str, Any]:
    first, last = store.time_range(f)
    return {"first_us": first, "last_us": last, **store.choices(f)}


def _traces(store: Store, f: Filters, request: Request) -> dict[str, Any]:
    p = request.query_params
    limit = int(_number(p.get("limit")) or 100)
    return {
        "traces": store.traces(
            f,
            route=p.get("route") or None,
            status=p.get("status") or None,
            user=p.get("user") or None,
            min_ms=_number(p.get("min_ms")),
            name=p.get("q") or None,
            limit=min(max(limit, 1), _MAX_TRACES),
        )
    }


Figure = Callable[[Store, Filters, Request], dict[str, Any]]


def create_app(store_path: str | os.PathLike[str]) -> Starlette:
    """Build the dashboard app over the store at ``store_path`` (which may not exist yet)."""
    path = os.fspath(store_path)

    def endpoint(figure: Figure) -> Callable[[Request], Response]:
        def handle(request: Request) -> Response:  # sync: Starlette runs it in a thread
            try:
                store = Store(path)
            except FileNotFoundError:
                return JSONResponse({"error": f"no store at {path} yet", "empty": True})
            try:
                return JSONResponse(figure(store, _filters(store, request), request))
            except sqlite3.DatabaseError as exc:  # a file that is not (or no longer) a store
                error = f"{path} is not an obs SQLite store ({exc})"
                return JSONResponse({"error": error, "empty": True})
            finally:
                store.close()

        return handle

    def trace(request: Request) -> Response:
        try:
            store = Store(path)
        except FileNotFoundError:
            return JSONResponse({"records": []}, status_code=404)
        try:
            records = store.trace(request.path_params["trace_id"])
        finally:
            store.close()
        return JSONResponse({"records": records}, status_code=200 if records else 404)

    def index(request: Request) -> Response:
        return FileResponse(_STATIC / "index.html", headers={"cache-control": "no-store"})

    return Starlette(
        routes=[
            Route("/", index),
            Route("/api/meta", endpoint(_meta)),
            Route("/api/overview", endpoint(_overview)),
            Route("/api/cost", endpoint(_cost)),
            Route("/api/database", endpoint(_database)),
            Route("/api/jobs", endpoint(_jobs)),
            Route("/api/traces", endpoint(_traces)),
            Route("/api/traces/{trace_id}", trace),
            Mount("/static", StaticFiles(directory=_STATIC), name="static"),
        ]
    )


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` names is this machine's loopback (127.0.0.0/8, ::1)."""
    try:
        infos = socket.getaddrinfo(host, None)
    except (OSError, UnicodeError):  # unresolvable, or "" (every interface)
        return False
    return bool(infos) and all(
        ipaddress.ip_address(str(info[4][0]).partition("%")[0]).is_loopback for info in infos
    )


def serve(
    store_path: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    allow_remote: bool = False,
) -> None:
    """Serve the dashboard with uvicorn until interrupted.

    Raises ``ValueError`` for a ``host`` beyond loopback unless ``allow_remote``: the page serves
    the store's prompts, user ids and errors to anyone who reaches it, unauthenticated.
    """
    if not allow_remote and not is_loopback(host):
        raise ValueError(f"dashboard: {host!r} is not a loopback address (allow_remote=False)")
    import uvicorn  # noqa: PLC0415 - the [dashboard] extra; imported only to serve

    uvicorn.run(create_app(store_path), host=host, port=port, log_level="warning")
