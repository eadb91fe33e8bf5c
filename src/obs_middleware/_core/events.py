"""Event handlers attached by name prefix (beam-telemetry semantics), run off the emitting thread.

``attach(handler_id, prefix, fn)`` calls ``fn(event_name, fields)`` for every event whose name
starts with ``prefix``. By default each handler has its own worker thread and bounded queue, so a
slow handler never delays the request that emitted the event: the emitter copies the fields (a
``span`` among them becomes ``Span.snapshot()``, frozen as it was when the event fired) and
appends them to the queue; the handler sees its events in order; a full queue drops the newest and
counts it in ``obs.dropped`` (reason ``handler_queue:<handler id>``). ``attach(..., sync=True)``
runs the handler inline instead, on the emitting thread, with the live span (for a handler that
must change the span before it is exported); it then adds its own run time to the request.

A handler that raises is detached and logged once. For an inline handler, a ``BaseException``
that is not an ``Exception`` (``KeyboardInterrupt``, ``SystemExit``, a cancellation) is control
flow and propagates to the code that started or ended the span, which is by then no longer current
(``.start``) or already handed to export (``.stop``, events). With no handler attached, emitters
pay one module attribute read (``events.active``). ``flush(timeout)`` (called by ``obs.flush()``)
waits until every queued event was handled. Events still queued when the process exits are not
handled.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

from .forks import renew_after_fork
from .metrics import dropped

__all__ = ["DEFAULT_QUEUE_SIZE", "Handler", "active", "attach", "detach", "dispatch", "flush"]

Handler = Callable[[str, dict[str, Any]], None]

DEFAULT_QUEUE_SIZE = 10_000

_log = logging.getLogger("obs_middleware")
_lock = threading.Lock()
renew_after_fork(globals(), "_lock", threading.Lock)
_handlers: dict[str, tuple[str, Handler, _Worker | None]] = {}  # id -> (prefix, fn, worker)
# Every worker whose thread started, attached or not: ``flush`` waits for a detached one still
# finishing its queue, or logging the failure that detached it.
_workers: weakref.WeakSet[_Worker] = weakref.WeakSet()
# event name -> matching handlers: (id, fn, worker or None when inline)
_by_event: dict[str, tuple[tuple[str, Handler, _Worker | None], ...]] = {}
active = False
_MAX_CACHED = 4096


class _Worker:
    """One handler's queue and the daemon thread that empties it, in order (started on first use).

    An event stays first in the queue while the handler runs, so an empty queue means handled.
    """

    __slots__ = (
        "__weakref__",
        "cap",
        "failed",
        "fn",
        "handler_id",
        "queue",
        "stopped",
        "thread",
        "wake",
    )

    def __init__(self, handler_id: str, fn: Handler, cap: int) -> None:
        self.handler_id = handler_id
        self.fn = fn
        self.cap = cap
        self.queue: deque[tuple[str, dict[str, Any]]] = deque()
        self.wake = threading.Event()
        self.thread: threading.Thread | None = None
        self.stopped = False  # detached: finish what is queued, then end
        self.failed = False  # raised: drop what is queued, end now

    def put(self, event: str, fields: dict[str, Any]) -> None:
        if len(self.queue) >= self.cap:
            dropped.add((f"handler_queue:{self.handler_id}",))
            return
        self.queue.append((event, fields))
        if self.thread is None:
            self._start()
        self.wake.set()

    def _start(self) -> None:
        with _lock:
            if self.thread is None:
                self.thread = threading.Thread(
                    target=self._run, name=f"obs-handler-{self.handler_id}", daemon=True
                )
                _workers.add(self)
                self.thread.start()

    def stop(self) -> None:
        self.stopped = True
        self.wake.set()

    def _run(self) -> None:
        queue = self.queue
        while True:
            self.wake.wait()
            self.wake.clear()
            while queue and not self.failed:
                event, fields = queue[0]
                try:
                    self.fn(event, fields)
                except BaseException:  # no caller to hand control flow to: detach, like a raise
                    _detach_failed(self, event)
                    self.failed = True
                finally:
                    queue.popleft()
            if self.failed:
                queue.clear()
                return
            if self.stopped and not queue:
                return

    def after_fork(self) -> None:
        """In a forked child: the parent's queued events are the parent's; no thread runs yet."""
        self.queue = deque()
        self.wake = threading.Event()
        self.thread = None


def attach(
    handler_id: str,
    prefix: str,
    fn: Handler,
    *,
    sync: bool = False,
    queue_size: int = DEFAULT_QUEUE_SIZE,
) -> None:
    """Call ``fn(event, fields)`` for every event whose name starts with ``prefix``.

    ``prefix=""`` matches every event. Re-attaching an id replaces its handler. By default ``fn``
    runs on a thread of its own, in event order, with a copy of the fields (``span``: a snapshot
    taken when the event fired) — treat them as read-only; at most ``queue_size`` events wait, the
    newest beyond are dropped and counted in ``obs.dropped{reason="handler_queue:<id>"}``.
    ``sync=True`` runs ``fn`` inline on the emitting thread with the live span: its run time is
    added to the request's.
    """
    global active
    if queue_size < 1:
        raise ValueError("attach: queue_size must be >= 1")
    worker = None if sync else _Worker(handler_id, fn, queue_size)
    with _lock:
        old = _handlers.get(handler_id)
        _handlers[handler_id] = (prefix, fn, worker)
        _by_event.clear()
        active = True
    if old is not None and old[2] is not None:
        old[2].stop()


def detach(handler_id: str) -> bool:
    """Detach a handler; returns False if no handler had that id.

    Events already queued for it are still handled; none after this call.
    """
    global active
    with _lock:
        old = _handlers.pop(handler_id, None)
        _by_event.clear()
        active = bool(_handlers)
    if old is not None and old[2] is not None:
        old[2].stop()
    return old is not None


def _detach_failed(worker: _Worker, event: str) -> None:
    global active
    with _lock:
        current = _handlers.get(worker.handler_id)
        if current is None or current[2] is not worker:
            return  # detached or replaced meanwhile
        del _handlers[worker.handler_id]
        _by_event.clear()
        active = bool(_handlers)
    _log.exception(
        "obs-middleware: handler %r raised on %r and was detached", worker.handler_id, event
    )


def dispatch(event: str, fields: dict[str, Any]) -> None:
    """Deliver one event to the handlers whose prefix matches it (queued, or inline if sync)."""
    matching = _by_event.get(event)
    if matching is None:
        with _lock:
            matching = tuple(
                (hid, fn, worker)
                for hid, (prefix, fn, worker) in _handlers.items()
                if event.startswith(prefix)
            )
            if len(_by_event) >= _MAX_CACHED:  # high-cardinality event names: stay bounded
                _by_event.clear()
            _by_event[event] = matching
    frozen: dict[str, Any] | None = None
    for handler_id, fn, worker in matching:
        if worker is not None:
            if frozen is None:
                frozen = _frozen(fields)
            worker.put(event, frozen)
            continue
        try:
            fn(event, fields)
        except Exception:
            if detach(handler_id):
                _log.exception(
                    "obs-middleware: handler %r raised on %r and was detached", handler_id, event
                )


def _frozen(fields: dict[str, Any]) -> dict[str, Any]:
    """The fields as a queued handler sees them: a copy, the span as it is now."""
    copy = dict(fields)
    span = copy.get("span")
    if span is not None:
        copy["span"] = span.snapshot()
    return copy


def flush(timeout: float = 5.0) -> bool:
    """Wait until every queued event was handled; False if ``timeout`` seconds passed first."""
    deadline = time.monotonic() + timeout
    with _lock:
        workers = list(_workers)
    for worker in workers:
        while worker.queue and not worker.failed:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.001)
    return True


def _after_fork() -> None:
    # Detached workers too: one still emptying its queue at the fork must not leave the child's
    # ``flush`` waiting on events no thread of the child handles.
    workers = {worker for _, _, worker in list(_handlers.values()) if worker is not None}
    for worker in workers | set(_workers):
        worker.after_fork()


os.register_at_fork(after_in_child=_after_fork)
