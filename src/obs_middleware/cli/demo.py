"""``obs demo``: an instrumented AI image and text service under load, then ``obs report``.

Offline and in one process: the service's Starlette and Litestar apps are called directly as
ASGI apps (no socket), the AI providers are local emulators on 127.0.0.1 reached through the real
SDKs, the database is a SQLite file in a temporary directory. A handful of traces are printed as
trees by the console exporter; every record goes to the SQLite store (read by ``obs report`` and
``obs dashboard``) and to a JSON lines file.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import obs_middleware as obs

from .._core.config import PipelineOptions
from .._record import FIXED_KEYS, Record
from ..exporters import ConsoleExporter, JsonlExporter
from ..exporters.sqlite import SqliteExporter, delete_service
from ..exporters.sqlite_store import Filters
from . import _asgi as asgi
from ._demo_ai import Providers
from ._demo_app import USERS, DemoService
from ._progress import Progress, after
from .report import report

__all__ = ["SERVICE", "run"]

SERVICE = "obs-demo"
_CONCURRENCY = 24
_PROMPTS = [
    "a lighthouse at dusk, oil painting",
    "a red fox in fresh snow",
    "isometric city block at night, neon",
    "portrait of an astronaut, film grain",
    "a cat wearing a tiny wizard hat",
]
_TIER_MODELS = {
    "free": ["sdxl", "flux-schnell"],
    "pro": ["sdxl", "flux-schnell", "flux-dev"],
    "team": ["flux-schnell", "flux-dev", "gpt-image-1"],
}
_CHAT_MODELS = {"free": ["gpt-4o-mini"], "pro": ["gpt-4o-mini", "gpt-4o"], "team": ["gpt-4o"]}

Call = tuple[str, str, str, dict[str, Any]]  # app ("images"|"text"), method, path, call kwargs
Make = Callable[[random.Random, str], Call]  # (rng, tier) -> one request


_SHOWN = frozenset(
    (*FIXED_KEYS, "span.kind", "http.status_code", "ai.provider", "ai.model", "ai.input_tokens",
     "ai.output_tokens", "ai.image_count", "cost.usd", "db.operation", "db.table", "job.state",
     "job.progress")
)  # fmt: skip


class _SampleConsole:
    """Print the first few request traces as trees, each whole, at the next flush.

    A trace is chosen when its root server span arrives (its children come first and wait); the
    chosen traces' records are held until ``flush()`` so that work finishing after the response
    (a queued job) prints inside its request's tree.
    """

    name = "console-sample"

    def __init__(self, traces: int) -> None:
        self.console = ConsoleExporter(sys.stdout)
        self.limit = traces
        self.chosen: set[str] = set()
        self.waiting: dict[str, list[Record]] = {}
        self.ready: list[Record] = []

    def export(self, records: Sequence[Record]) -> None:
        for rec in records:
            trace = rec["trace_id"]
            if trace in self.chosen:
                self.ready.append(rec)
            elif trace and len(self.chosen) < self.limit:
                if rec["type"] == "span" and rec["parent_id"] is None:
                    waiting = self.waiting.pop(trace, [])
                    if rec.get("span.kind") == "server":
                        self.chosen.add(trace)
                        self.ready += [*waiting, rec]
                else:
                    self.waiting.setdefault(trace, []).append(rec)
        if len(self.chosen) >= self.limit:
            self.waiting.clear()

    def flush(self) -> None:
        if self.ready:
            # Copies with the telling attributes only: trees, not walls of text.
            self.console.export([{k: v for k, v in r.items() if k in _SHOWN} for r in self.ready])
            self.ready = []
        self.console.flush()

    def shutdown(self) -> None:
        self.flush()


def _headers(user: str, private: bool = False) -> dict[str, str]:
    return {"x-user": user, **({"x-private": "1"} if private else {})}


# One of each kind, sent one at a time before the load: the traces the console prints.
_WARMUP: list[Call] = [
    ("images", "POST", "/v1/images",
     {"json": {"prompt": _PROMPTS[0], "model": "sdxl"}, "headers": _headers("u-ada")}),
    ("text", "POST", "/v1/chat",
     {"json": {"prompt": "Name three oil painters.", "model": "gpt-4o-mini"},
      "headers": _headers("u-bo")}),
    ("images", "POST", "/v1/images/3/upscale", {"headers": _headers("u-ada")}),
    ("images", "GET", "/v1/images/7/thumbnail", {"headers": _headers("u-dee")}),
]  # fmt: skip


def _new_image(rng: random.Random, tier: str) -> Call:
    prompt = "something forbidden" if rng.random() < 0.02 else rng.choice(_PROMPTS)
    model = rng.choice(_TIER_MODELS[tier]) if rng.random() > 0.01 else "no-such-model"
    return "images", "POST", "/v1/images", {"json": {"prompt": prompt, "model": model}}


def _search(rng: random.Random, tier: str) -> Call:
    query = rng.choice(["fox snow", "neon city", "oil painting lighthouse"])
    return "images", "GET", "/v1/images", {"params": {"q": query}}


def _chat(rng: random.Random, tier: str) -> Call:
    prompt = rng.choice(["Describe this image.", "Write a title.", "Suggest five tags."])
    return "text", "POST", "/v1/chat", {"json": {"prompt": prompt, "model": rng.choice(
        _CHAT_MODELS[tier])}}  # fmt: skip


def _on_image(app: str, method: str, suffix: str, top: int = 300) -> Make:
    def make(rng: random.Random, tier: str) -> Call:
        return app, method, f"/v1/images/{rng.randint(1, top)}{suffix}", {}

    return make


# (weight, request maker): roughly an image product's traffic.
_MIX: list[tuple[float, Make]] = [
    (22, _new_image),
    (15, _on_image("images", "GET", "", top=420)),  # ids past the last image answer 404
    (11, lambda rng, tier: ("images", "GET", "/v1/images", {})),
    (3, _search),  # the slow query
    (5, _on_image("images", "POST", "/upscale")),  # queues a ComfyUI job
    (1.5, _on_image("images", "GET", "/thumbnail")),  # a bug: always 500
    (25.5, _chat),
    (8, lambda rng, tier: ("text", "GET", "/v1/usage", {})),
    (9, _on_image("text", "GET", "/caption")),
]


def _call(rng: random.Random) -> Call:
    """Draw one request of the mix, from a random user (5 % of them marked private)."""
    user, tier = rng.choice(USERS)
    make = rng.choices([m for _, m in _MIX], weights=[w for w, _ in _MIX])[0]
    app, method, path, kw = make(rng, tier)
    return app, method, path, {**kw, "headers": _headers(user, rng.random() < 0.05)}


async def _send(service: DemoService, call: Call) -> int:
    app, method, path, kw = call
    target = service.images_app if app == "images" else service.text_app
    try:
        status, _ = await asgi.call(target, method, path, **kw)
    except Exception:  # Starlette re-raises after answering 500; the span has recorded it
        return 500
    return status


async def _drive(service: DemoService, total: int, rng: random.Random) -> tuple[int, int]:
    """Send the warm-up, then ``total`` requests with bounded concurrency; (sent, 5xx)."""
    service.start_worker()
    for call in _WARMUP:
        await _send(service, call)
    deadline = time.monotonic() + 10
    while service.jobs_done < service.jobs_queued and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    await asyncio.to_thread(obs.flush, 5.0)  # the sample traces print before the bar

    remaining = max(total - len(_WARMUP), 0)
    progress = Progress(remaining, "requests")
    pending = iter([_call(rng) for _ in range(remaining)])
    failures = 0

    async def worker() -> None:
        nonlocal failures
        for call in pending:
            failed = await _send(service, call) >= 500
            failures += failed
            progress.advance(failed)

    await asyncio.gather(*(worker() for _ in range(_CONCURRENCY)))
    progress.close()
    await service.stop_worker()
    return len(_WARMUP) + remaining, failures


def _pricing() -> dict[str, Any]:
    """Price the self-hosted ComfyUI per GPU-second (no public price list applies)."""
    try:
        from .._core.config import PricingOptions  # noqa: PLC0415 - absent in older cores
    except ImportError:
        return {}
    prices = {"defaults": {"comfyui": {"per_gpu_second": {"usd": 0.00076}}}}
    return {"pricing": PricingOptions(prices=prices)}


def run(args: argparse.Namespace) -> int:
    """``obs demo``: returns the exit code."""
    started = time.perf_counter()
    store = os.path.abspath(args.store)
    jsonl = os.path.abspath(args.jsonl)
    delete_service(store, SERVICE)
    if os.path.exists(jsonl):
        os.remove(jsonl)
    print(f"obs demo: an AI image and text service under {args.requests} requests, offline\n")
    obs.configure(
        service=SERVICE,
        environment="demo",
        exporters=[
            _SampleConsole(len(_WARMUP)),
            JsonlExporter(jsonl),
            SqliteExporter(store, metrics_interval_s=0.25),
        ],
        pipeline=PipelineOptions(queue_size=200_000, batch_size=2_000, interval_s=0.25),
        sampling=obs.SamplingOptions(traces_per_s=0),  # the report reads every trace from the store
        **_pricing(),
    )
    # The report lists slow queries; one warning line per slow query would bury the progress bar.
    logging.getLogger("obs_middleware.sqlalchemy").setLevel(logging.ERROR)
    litestar_plugin = "litestar" in obs.instrument_all().patched
    providers = Providers(random.Random(args.seed))
    providers.start()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="obs-demo-") as directory:
        service = DemoService(directory, providers, litestar_plugin=litestar_plugin)
        # Again, now that the apps, the database and the SDKs are imported: what was patched.
        outcomes = obs.instrument_all()
        print("instrumented: " + ", ".join(outcomes.patched or ["(nothing)"]))
        for name, reason in providers.skipped.items():
            print(f"skipped {name}: {reason}")
        print("\nsample traces:")
        try:
            sent, failures = asyncio.run(_drive(service, args.requests, rng))
        finally:
            service.db.close()
            providers.close()
    with after(1.0, "obs demo: writing the last records to the store…"):
        obs.shutdown(30.0)
    print(f"\n{sent} requests ({failures} answered 5xx) in {time.perf_counter() - started:.1f} s")
    print(f"records: {store} (SQLite store) and {jsonl} (JSON lines)\n")
    report(store, Filters(SERVICE))
    script = os.path.join(os.path.dirname(sys.executable), "obs")
    command = os.path.relpath(script) if os.path.exists(script) else "obs"
    print(f"\nexplore it: {command} dashboard --store {os.path.relpath(store)}")
    return 0
