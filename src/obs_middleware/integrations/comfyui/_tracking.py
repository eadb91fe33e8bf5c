"""Following an accepted prompt by its id, from ``POST /prompt`` to its end.

WebSocket messages and ``GET /history/<id>`` replies enrich the prompt's span and drive its
``obs.job``; the prompt ends at ``execution_success``/``execution_error``/``execution_interrupted``
or a finished history entry. At most ``_MAX_TRACKED`` prompts are followed at once.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from typing import Any

from ..._core import span as _span
from ..._core.forks import renew_after_fork
from ..._core.job import Job, job
from .._ai import AICall
from ._workflow import latent, model

__all__ = [
    "Open",
    "Tracked",
    "executing",
    "finish",
    "lock",
    "on_history",
    "on_prompt_reply",
    "on_ws",
    "prompts",
]

lock = threading.RLock()
renew_after_fork(globals(), "lock", threading.RLock)
_MAX_TRACKED = 256


class Tracked:
    """One accepted prompt followed by its id until it ends."""

    __slots__ = (
        "call",
        "done",
        "failed",
        "height",
        "images",
        "job",
        "keep",
        "model",
        "posted",
        "posted_wall",
        "previews",
        "prompt_id",
        "started",
        "started_ms",
        "width",
    )

    def __init__(self, prompt_id: str, call: AICall, workflow: dict[str, Any]) -> None:
        self.prompt_id = prompt_id
        self.call = call
        self.keep: Any = None  # an owned call's stream handle: the call ends with it
        self.job: Job | None = None
        self.model = model(workflow)
        self.width, self.height = latent(workflow)
        self.posted = time.monotonic()
        self.posted_wall = time.time()
        self.started = 0.0
        self.started_ms: float | None = None
        self.images = 0
        self.previews = 0
        self.failed = False
        self.done = False


prompts: OrderedDict[str, Tracked] = OrderedDict()
executing: list[Tracked] = []  # the prompt the server runs now: binary previews are its


def track(tracked: Tracked) -> None:
    with lock:
        prompts[tracked.prompt_id] = tracked
        while len(prompts) > _MAX_TRACKED:
            _, evicted = prompts.popitem(last=False)
            _end_job(evicted)
            evicted.done = True  # an owned call ends ("gc") when its handle is collected
            evicted.keep = None


def lookup(prompt_id: Any) -> Tracked | None:
    tracked = prompts.get(prompt_id) if isinstance(prompt_id, str) else None
    return None if tracked is None or tracked.done else tracked


# -- POST /prompt --------------------------------------------------------------------------------


def on_prompt_reply(
    call: AICall, workflow: dict[str, Any], status: int, reply: Any, owned: bool
) -> None:
    if status == 200 and isinstance(reply, dict) and isinstance(reply.get("prompt_id"), str):
        tracked = Tracked(reply["prompt_id"], call, workflow)
        call.set_request_id(tracked.prompt_id)
        if isinstance(reply.get("number"), int):
            call.attrs["ai.comfyui.number"] = reply["number"]
        if owned:
            tracked.keep = call.wrap_stream(Open())
        track(tracked)
        return
    call.attrs["http.status_code"] = status
    error = reply.get("error") if isinstance(reply, dict) else None
    node_errors = reply.get("node_errors") if isinstance(reply, dict) else None
    kind = error.get("type") if isinstance(error, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    if isinstance(kind, str):
        call.attrs["ai.provider_error"] = kind
    if isinstance(node_errors, dict) and node_errors:
        call.attrs["ai.node_errors"] = ", ".join(
            f"{node_id}:{entry.get('class_type')}:{(entry.get('errors') or [{}])[0].get('type')}"
            for node_id, entry in list(node_errors.items())[:8]
            if isinstance(entry, dict)
        )
    call.set_status(
        "error", error_type=kind or f"HTTP {status}", message=message or f"HTTP {status}"
    )


class Open:
    """Stands for an owned call's "stream": the prompt, running until its end is seen."""

    def __iter__(self) -> Open:
        return self

    def __next__(self) -> Any:
        raise StopIteration


# -- WebSocket messages --------------------------------------------------------------------------


def on_ws(message: Any) -> None:
    if not prompts:
        return
    if isinstance(message, (bytes, bytearray)):
        with lock:
            if executing and not executing[0].done:
                executing[0].previews += 1
        return
    # Only messages about a prompt are parsed (not status broadcasts, not other sockets' traffic).
    if not isinstance(message, str) or message[:1] != "{" or '"prompt_id"' not in message:
        return
    parsed = json.loads(message)
    data = parsed.get("data")
    if not isinstance(data, dict):
        return
    with lock:
        tracked = lookup(data.get("prompt_id"))
        if tracked is not None:
            _on_event(tracked, parsed.get("type"), data)


def _on_event(tracked: Tracked, kind: Any, data: dict[str, Any]) -> None:
    if kind in ("execution_start", "executing", "progress", "executed") and tracked.job is None:
        _start_job(tracked, data)
    if kind == "execution_cached" and isinstance(data.get("nodes"), list):
        tracked.call.attrs["ai.cached_nodes"] = len(data["nodes"])
    elif kind == "progress" and tracked.job is not None:
        value, total = data.get("value"), data.get("max")
        if isinstance(value, int) and isinstance(total, int) and total > 0:
            tracked.job.progress(
                value / total, step=value, total=total, message=f"node {data.get('node')}"
            )
    elif kind == "executed":
        output = data.get("output")
        images = output.get("images") if isinstance(output, dict) else None
        if isinstance(images, list):
            tracked.images += len(images)
    elif kind == "execution_success":
        finish(tracked, data.get("timestamp"))
    elif kind == "execution_error":
        _fail(tracked, data)
        finish(tracked, data.get("timestamp"))
    elif kind == "execution_interrupted":
        tracked.call.set_status("cancelled", error_type="execution_interrupted")
        finish(tracked, data.get("timestamp"))
    elif kind == "executing" and data.get("node") is None:
        finish(tracked, None)


def _start_job(tracked: Tracked, data: dict[str, Any]) -> None:
    tracked.started = time.monotonic()
    timestamp = data.get("timestamp")
    if isinstance(timestamp, (int, float)):
        tracked.started_ms = float(timestamp)
    tracked.call.set_queue_ms((tracked.started - tracked.posted) * 1000)
    executing[:] = [tracked]
    queued_at = (_span.wall_anchor_ns + _span.clock_ns()) / 1e9 - (tracked.started - tracked.posted)
    started = job(
        tracked.prompt_id, service_type="comfyui", model=tracked.model, queued_at=queued_at
    )
    started.__enter__()
    started.span.deactivate()  # the job runs on the server: it is nobody's parent here
    tracked.job = started


def _fail(tracked: Tracked, data: dict[str, Any]) -> None:
    tracked.failed = True
    exception_type = data.get("exception_type")
    node_type = data.get("node_type")
    if isinstance(node_type, str):
        tracked.call.attrs["ai.failed_node"] = f"{data.get('node_id')}:{node_type}"
    tracked.call.set_status(
        "error",
        error_type=exception_type if isinstance(exception_type, str) else "execution_error",
        message=str(data.get("exception_message") or "execution error"),
    )


def finish(tracked: Tracked, end_ms: Any) -> None:
    """Record what the prompt produced, end its job and (if ours) its span."""
    if tracked.done:
        return
    tracked.done = True
    call = tracked.call
    if tracked.images:
        call.set_images(tracked.images, width=tracked.width, height=tracked.height)
    if tracked.previews:
        call.attrs["ai.preview_count"] = tracked.previews
    if tracked.started_ms is not None and isinstance(end_ms, (int, float)):
        run_s = max(end_ms - tracked.started_ms, 0.0) / 1000
    elif tracked.started:
        run_s = time.monotonic() - tracked.started
    else:
        run_s = None
    if run_s is not None:
        call.attrs["ai.run_ms"] = round(run_s * 1000, 3)
        call.set_compute(round(run_s, 6))
    _end_job(tracked)
    prompts.pop(tracked.prompt_id, None)
    if executing and executing[0] is tracked:
        executing.clear()
    keep, tracked.keep = tracked.keep, None
    if keep is not None:  # held until the call ended: dropping it first would end it as "gc"
        call.end_stream("done")


def _end_job(tracked: Tracked) -> None:
    started, tracked.job = tracked.job, None
    if started is None:
        return
    span = tracked.call.span
    if span.status != "ok":
        started.span.status = span.status
        started.span.error_type = span.error_type
        started.span.error_message = span.error_message
    started.__exit__(None, None, None)


# -- GET /history/<id> ---------------------------------------------------------------------------


def on_history(prompt_id: str, reply: Any) -> None:
    entry = reply.get(prompt_id) if isinstance(reply, dict) else None
    if not isinstance(entry, dict):
        return
    with lock:
        tracked = lookup(prompt_id)
        if tracked is None:
            return
        raw = entry.get("status")
        status: dict[str, Any] = raw if isinstance(raw, dict) else {}
        outputs = entry.get("outputs")
        if isinstance(outputs, dict) and not tracked.images:
            tracked.images = sum(
                len(o.get("images") or ()) for o in outputs.values() if isinstance(o, dict)
            )
        end_ms = None
        for message in status.get("messages") or ():
            if not (
                isinstance(message, list) and len(message) == 2 and isinstance(message[1], dict)
            ):
                continue
            kind, data = message
            timestamp = data.get("timestamp")
            if kind == "execution_start" and tracked.started_ms is None and timestamp:
                tracked.started_ms = float(timestamp)
                tracked.call.set_queue_ms(timestamp - tracked.posted_wall * 1000)
            elif kind in ("execution_success", "execution_error", "execution_interrupted"):
                end_ms = timestamp
                if kind == "execution_error" and not tracked.failed:
                    _fail(tracked, data)
        if status.get("completed") or status.get("status_str") in ("success", "error"):
            finish(tracked, end_ms)
