"""The demo service: an AI image and text API, instrumented the way a user would.

Image routes are Starlette, text routes are Litestar (each behind obs-middleware), both share a
SQLAlchemy database; provider calls go to local emulators through the real SDKs (``_demo_ai``);
an asyncio worker runs upscale jobs queued by requests, in ``obs.job`` spans that continue the
request's trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, cast

from litestar import Litestar, get, post
from litestar import Request as LitestarRequest
from litestar.exceptions import HTTPException, NotFoundException
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import obs_middleware as obs

from .._core.context import format_traceparent
from ._demo_ai import IMAGE_MODELS, ProviderError, Providers
from ._demo_db import Database

__all__ = ["USERS", "DemoService"]

USERS: list[tuple[str, str]] = [
    ("u-ada", "team"),
    ("u-bo", "pro"),
    ("u-cy", "pro"),
    ("u-dee", "free"),
    ("u-eli", "free"),
    ("u-fay", "free"),
    ("u-gus", "pro"),
    ("u-hal", "free"),
]
_TIERS = dict(USERS)


class DemoService:
    """Both apps, the database, the providers and the job worker of one demo run."""

    def __init__(self, directory: str, providers: Providers, *, litestar_plugin: bool) -> None:
        """Build the apps; ``litestar_plugin`` says ``instrument_all()`` adds ``ObsPlugin``.

        Without it the text app is wrapped in ``ObsMiddleware`` here.
        """
        self.db = Database(directory, USERS)
        self.providers = providers
        self.jobs: asyncio.Queue[tuple[int, str, str, float] | None] = asyncio.Queue()
        self.jobs_queued = 0
        self.jobs_done = 0
        self.images_app = self._images_app()
        self.text_app = self._text_app(litestar_plugin)
        self._workers: list[asyncio.Task[None]] = []

    # -- helpers shared by both frameworks -------------------------------------------------------
    @staticmethod
    def _user(headers: Any) -> str:
        user = headers.get("x-user") or "anonymous"
        obs.set_user(user, _TIERS.get(user, "free"))
        if headers.get("x-private") == "1":
            obs.mark_private()
        return str(user)

    # -- images: Starlette -----------------------------------------------------------------------
    def _images_app(self) -> Any:
        db, providers = self.db, self.providers

        async def create_image(request: Request) -> JSONResponse:
            user = self._user(request.headers)
            body = await request.json()
            model = body.get("model", "sdxl")
            if model not in IMAGE_MODELS or not body.get("prompt"):
                return JSONResponse({"error": "unknown model or empty prompt"}, status_code=422)
            with obs.span("image.moderate", words=len(body["prompt"].split())):
                if "forbidden" in body["prompt"]:
                    return JSONResponse({"error": "prompt rejected"}, status_code=400)
            try:
                url = await run_in_threadpool(providers.image, model, body["prompt"])
            except ProviderError as exc:
                return JSONResponse({"error": str(exc)}, status_code=502)
            image_id = await run_in_threadpool(db.add_image, user, body["prompt"], model, url)
            obs.emit("image.generated", model=model, provider=IMAGE_MODELS[model][0])
            return JSONResponse({"id": image_id, "url": url}, status_code=201)

        async def get_image(request: Request) -> JSONResponse:
            self._user(request.headers)
            image = await run_in_threadpool(db.get_image, int(request.path_params["image_id"]))
            if image is None:
                return JSONResponse({"error": "not found"}, status_code=404)
            return JSONResponse(image)

        async def list_images(request: Request) -> JSONResponse:
            user = self._user(request.headers)
            query = request.query_params.get("q")
            if query:
                ids = await run_in_threadpool(db.search, query)
            else:
                ids = await run_in_threadpool(db.recent_images, user)
            return JSONResponse({"ids": ids})

        async def upscale(request: Request) -> JSONResponse:
            user = self._user(request.headers)
            image_id = int(request.path_params["image_id"])
            if await run_in_threadpool(db.get_image, image_id) is None:
                return JSONResponse({"error": "not found"}, status_code=404)
            job_id = await run_in_threadpool(db.add_job, image_id)
            current = obs.current_span()
            parent = (
                format_traceparent(current.trace_id, current.span_id, current.sampled)
                if current is not None
                else ""
            )
            obs.emit("job.queued", **{"job.id": str(job_id), "job.service_type": "upscale"})
            self.jobs_queued += 1
            await self.jobs.put((job_id, user, parent, time.time()))
            return JSONResponse({"job": job_id}, status_code=202)

        async def crash(request: Request) -> JSONResponse:
            self._user(request.headers)
            raise RuntimeError("thumbnail cache corrupted")

        app = Starlette(
            routes=[
                Route("/v1/images", create_image, methods=["POST"]),
                Route("/v1/images", list_images, methods=["GET"]),
                Route("/v1/images/{image_id}", get_image),
                Route("/v1/images/{image_id}/upscale", upscale, methods=["POST"]),
                Route("/v1/images/{image_id}/thumbnail", crash),
            ]
        )
        app.add_middleware(obs.ObsMiddleware)
        return app

    # -- text: Litestar --------------------------------------------------------------------------
    def _text_app(self, instrumented: bool) -> Any:
        db, providers = self.db, self.providers

        @post("/v1/chat", status_code=200)
        async def chat(
            request: LitestarRequest[Any, Any, Any], data: dict[str, Any]
        ) -> dict[str, Any]:
            user = self._user(request.headers)
            model = data.get("model", "gpt-4o-mini")
            try:
                text, tokens_in, tokens_out = await run_in_threadpool(
                    providers.chat, model, data.get("prompt", "")
                )
            except ProviderError as exc:
                raise HTTPException(status_code=502, detail=str(exc)) from exc
            await run_in_threadpool(db.add_chat, user, model, tokens_in, tokens_out)
            return {"text": text, "tokens": tokens_in + tokens_out}

        @get("/v1/usage")
        async def usage(request: LitestarRequest[Any, Any, Any]) -> dict[str, int]:
            user = self._user(request.headers)
            return await run_in_threadpool(db.usage, user)

        @get("/v1/images/{image_id:int}/caption")
        async def caption(request: LitestarRequest[Any, Any, Any], image_id: int) -> dict[str, Any]:
            self._user(request.headers)
            image = await run_in_threadpool(db.get_image, image_id)
            if image is None:
                raise NotFoundException()
            text, _, _ = await run_in_threadpool(
                providers.chat, "gpt-4o-mini", f"Caption: {image['prompt']}"
            )
            return {"caption": text}

        app = Litestar(
            route_handlers=[chat, usage, caption],
            logging_config=None,  # Litestar's default would log every request at INFO
        )
        return app if instrumented else obs.ObsMiddleware(cast(Any, app))

    # -- jobs ------------------------------------------------------------------------------------
    def start_worker(self, workers: int = 3) -> None:
        """Start the upscale workers on the running loop."""
        loop = asyncio.get_running_loop()
        self._workers = [loop.create_task(self._work(f"worker-{i}")) for i in range(workers)]

    async def stop_worker(self) -> None:
        """Let the workers finish the queue, then stop them."""
        for _ in self._workers:
            await self.jobs.put(None)
        await asyncio.gather(*self._workers)

    async def _work(self, worker_id: str) -> None:
        while (item := await self.jobs.get()) is not None:
            # A failure is recorded on the job span; the worker carries on.
            with contextlib.suppress(Exception):
                await self._run_job(worker_id, *item)
            self.jobs_done += 1

    async def _run_job(
        self, worker_id: str, job_id: int, user: str, parent: str, queued_at: float
    ) -> None:
        async with _job_span(job_id, worker_id, queued_at, parent) as job:
            obs.set_user(user, _TIERS.get(user, "free"))
            await run_in_threadpool(self.db.set_job_state, job_id, "running")
            _progress(job, 0.1, "workflow queued")
            try:
                await run_in_threadpool(self.providers.workflow, job_id)
            except ProviderError:
                await run_in_threadpool(self.db.set_job_state, job_id, "failed")
                raise
            _progress(job, 1.0, "done")
            await run_in_threadpool(self.db.set_job_state, job_id, "done")


def _job_span(job_id: int, worker_id: str, queued_at: float, parent: str) -> Any:
    """``obs.job(...)``, or a plain consumer span with the ``job.*`` keys on a core without it."""
    make_job = getattr(obs, "job", None)
    if make_job is None:
        fields = {"job.id": str(job_id), "job.service_type": "upscale", "job.worker_id": worker_id}
        return obs.span("job upscale", _kind="consumer", **fields)
    return make_job(
        str(job_id),
        service_type="upscale",
        worker_id=worker_id,
        model="comfyui/upscale",
        queued_at=queued_at,
        traceparent=parent or None,
        progress_interval_s=0.0,
    )


def _progress(job: Any, fraction: float, message: str) -> None:
    if hasattr(job, "progress"):
        job.progress(fraction, message=message)
