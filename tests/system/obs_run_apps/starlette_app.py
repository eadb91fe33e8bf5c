"""``obs run -- python starlette_app.py PORT``: an app that starts uvicorn itself and also adds
``ObsMiddleware`` itself (doubled instrumentation: still one span per request)."""

from __future__ import annotations

import sys

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import obs_middleware as obs


async def item(request: Request) -> PlainTextResponse:
    with obs.span("work"):
        return PlainTextResponse(request.path_params["item_id"])


app = Starlette(routes=[Route("/items/{item_id}", item)])
app.add_middleware(obs.ObsMiddleware)

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]))
