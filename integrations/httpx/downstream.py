"""The downstream service of the cross-process suites: Starlette + ObsMiddleware under uvicorn.

Run as ``python downstream.py PORT JSONL_PATH``: it exports its own spans to ``JSONL_PATH``.
"""

from __future__ import annotations

import sys

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse
from starlette.routing import Route

import obs_middleware as obs


async def image(request: Request) -> JSONResponse:
    with obs.span("render"):
        pass
    return JSONResponse({"id": request.path_params["image_id"]})


async def moved(request: Request) -> RedirectResponse:
    return RedirectResponse(f"/images/{request.path_params['image_id']}", status_code=307)


async def ingest(request: Request) -> PlainTextResponse:
    await request.body()
    return PlainTextResponse("stored")


async def ready(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


app = Starlette(
    routes=[
        Route("/images/{image_id}", image),
        Route("/old/{image_id}", moved),
        Route("/ingest", ingest, methods=["POST"]),
        Route("/healthz", ready),
    ]
)
app.add_middleware(obs.ObsMiddleware)

if __name__ == "__main__":
    obs.configure(service="downstream", exporters=[f"jsonl:{sys.argv[2]}"])
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
