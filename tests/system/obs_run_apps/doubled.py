"""``obs run -- python doubled.py``: each framework's app instrumented twice (``obs run`` and the
app's own line), plus a plain Starlette app; driven by the frameworks' test clients. Prints, per
app, the ``x-request-id`` headers of a response and the status of ``/metrics``."""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI
from flask import Flask
from litestar import Litestar, get
from litestar.testing import TestClient as LitestarClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

import obs_middleware as obs
from obs_middleware.middleware.litestar import ObsPlugin


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hi")


plain = Starlette(routes=[Route("/plain/{n}", hello)])
star = Starlette(routes=[Route("/starlette/{n}", hello)])
star.add_middleware(obs.ObsMiddleware)
fast = FastAPI()


@fast.get("/fastapi/{n}")
async def fast_n(n: int) -> dict[str, int]:
    return {"n": n}


fast.add_middleware(obs.ObsMiddleware)


@get("/litestar/{n:int}")
async def lite_n(n: int) -> dict[str, int]:
    return {"n": n}


lite = Litestar([lite_n], middleware=[obs.ObsMiddleware])
lite_plugin = Litestar([lite_n], plugins=[ObsPlugin()])
flask_app = Flask(__name__)


@flask_app.route("/flask/<int:n>")
def flask_n(n: int) -> str:
    return str(n)


flask_app.wsgi_app = obs.ObsWSGIMiddleware(flask_app.wsgi_app)  # type: ignore[method-assign]


def request_ids(headers: Any) -> int:
    """How many ``x-request-id`` headers a response has (httpx's or werkzeug's headers)."""
    items = headers.multi_items() if hasattr(headers, "multi_items") else list(headers)
    return sum(1 for key, _ in items if key.lower() == "x-request-id")


out: dict[str, Any] = {}
clients: dict[str, Any] = {
    "plain": TestClient(plain),
    "starlette": TestClient(star),
    "fastapi": TestClient(fast),
    "litestar": LitestarClient(lite),
    "flask": flask_app.test_client(),
}
for name, client in clients.items():
    ids = []
    for n in range(3):
        response = client.get(f"/{name}/{n}")
        assert response.status_code == 200, (name, response.status_code)
        ids.append(request_ids(response.headers))
    metrics = client.get("/metrics")
    out[name] = {"request_ids": ids, "metrics": metrics.status_code}
response = LitestarClient(lite_plugin).get("/litestar/9")
out["litestar_plugin"] = {"request_ids": [request_ids(response.headers)]}
obs.flush()
print(json.dumps(out))
