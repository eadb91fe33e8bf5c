"""Delivery pipeline: bounded queue → one worker thread → batches → exporters.

The request thread only appends to a deque (drop-newest when full, counted). The worker, started
lazily on the first record and again after ``fork()``, converts each batch to records once and
hands them to every exporter; an exporter with ``export_spans`` (the column stores) gets the
finished spans instead and builds its own rows, and with only such exporters no record is built.
``flush(timeout)`` waits for what was queued before the call; ``drain(timeout)`` and
``shutdown(timeout)`` flush under a hard deadline and never hang the process: the worker is a
daemon thread, so an exporter stuck on a dead backend cannot block exit, and what is still queued
or in flight at the deadline is counted (``shutdown_timeout``), never lost silently.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from typing import Protocol

from ._core.metrics import dropped
from ._core.span import Event, Span
from ._record import Record, Resource, to_records

__all__ = ["Exporter", "Pipeline", "SpanExporter"]

_log = logging.getLogger("obs_middleware")


class Exporter(Protocol):
    """What the pipeline calls, always from its worker thread.

    Optionally also ``after_fork()``, called in a forked child (from the thread that forked,
    before any export there) when the exporter holds per-process state: it drops the parent's
    connections, open files and buffered records (the parent still delivers those) without
    sending or writing anything, so the child starts clean. It must not block; an error it
    raises is logged once and does not stop the child.
    """

    name: str

    def export(self, records: Sequence[Record]) -> None:
        """Deliver one batch (records are shared: do not mutate them)."""

    def flush(self) -> None:
        """Push out anything buffered."""

    def shutdown(self) -> None:
        """Release resources; no export follows."""

    # Optional: ``bind(resource: Resource) -> None``, called when a pipeline is built with the
    # service identity its records carry (an exporter that needs it beyond the records).


class SpanExporter(Exporter, Protocol):
    """An exporter that converts finished spans itself, skipping the shared records."""

    def export_spans(self, items: Sequence[Span | Event], resource: Resource) -> None:
        """Deliver one batch of finished spans and events (read-only)."""


ExportSpans = Callable[[Sequence[Span | Event], Resource], None]


class Pipeline:
    """Queue and worker for one configuration. ``submit`` is the hot path.

    ``tick`` (optional) runs on the worker at each wake-up, a few times a second, and between
    the batches of one drain: the adaptive sampler's clock, which must keep running while a queue
    that fills as fast as it drains keeps the worker from sleeping.
    """

    def __init__(
        self,
        exporters: Sequence[Exporter],
        resource: Resource,
        *,
        queue_size: int,
        batch_size: int,
        interval_s: float,
        tick: Callable[[], None] | None = None,
    ) -> None:
        self.exporters = tuple(exporters)
        self._tick = tick
        self._routes: tuple[tuple[Exporter, ExportSpans | None], ...] = tuple(
            (exporter, getattr(exporter, "export_spans", None)) for exporter in self.exporters
        )
        self._records = any(export_spans is None for _, export_spans in self._routes)
        self.resource = resource
        for exporter in self.exporters:
            bind = getattr(exporter, "bind", None)
            if bind is not None:
                bind(resource)
        self.queue_size = queue_size
        self.batch_size = batch_size
        self.interval_s = interval_s
        # Per pipeline, not the process-wide guard of ``_core.internal``: the pipeline a later
        # ``configure()`` builds reports its exporters' failures again.
        self._failed_once: set[str] = set()
        self._closed = False
        # The batch the worker is exporting, and the last one counted as lost at a deadline.
        self._inflight: list[Span | Event] | None
        self._counted: list[Span | Event] | None
        # Cleared in place after fork (never replaced): the sampling hook holds a reference.
        self.queue: deque[Span | Event] = deque()
        self._reset_threading()
        _pipelines.add(self)

    def _reset_threading(self) -> None:
        self.queue.clear()
        self.started = False
        # True while the worker runs and the pipeline is open: the hot path may just append.
        self.accepting = False
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._cond = threading.Condition()
        self._requested = 0  # flush generations asked for
        self._done = 0  # flush generations completed
        self._stopping = False
        self._inflight = self._counted = None  # the parent's batch is the parent's to export
        self._pid = os.getpid()

    # -- request thread ------------------------------------------------------------------------
    def submit(self, item: Span | Event) -> None:
        """Queue one finished span or event; never blocks, drops (counted) when full."""
        queue = self.queue
        if len(queue) >= self.queue_size or self._closed:
            dropped.add(("closed",) if self._closed else ("queue_full",))
            return
        queue.append(item)
        if not self.started:
            self._start()
        elif len(queue) == self.batch_size:
            self._wake.set()

    def submitter(self) -> Callable[[Span | Event], None] | None:
        """``submit`` with the common case inlined (the finish hook's fast path); None without
        exporters, when nothing would ever read the queue.
        """
        if not self.exporters:
            return None
        submit = self.submit
        queue = self.queue
        append = queue.append
        capacity = self.queue_size
        batch_size = self.batch_size
        wake = self.wake  # the event is replaced after fork: look it up each time

        def fast_submit(item: Span | Event) -> None:
            # accepting: the worker runs and the pipeline is open; submit() handles the rest.
            if self.accepting and len(queue) < capacity:
                append(item)
                if len(queue) == batch_size:
                    wake()
            else:
                submit(item)

        return fast_submit

    def wake(self) -> None:
        """Ask the worker to export now rather than at its next interval."""
        self._wake.set()

    def _start(self) -> None:
        with self._cond:
            if self.started or self._closed:
                return
            self._thread = threading.Thread(target=self._run, name="obs-export", daemon=True)
            self.started = True
            self._thread.start()
            self.accepting = True

    # -- worker --------------------------------------------------------------------------------
    def _run(self) -> None:
        wake = self._wake
        tick = self._tick
        while True:
            wake.wait(self.interval_s)
            wake.clear()
            if tick is not None:
                self._tick_safely(tick)
            with self._cond:
                target = self._requested
                stopping = self._stopping
            self._drain()
            if target > self._done:
                self._call_exporters("flush")
            with self._cond:
                self._done = max(self._done, target)
                self._cond.notify_all()
            if stopping:
                self._call_exporters("shutdown")
                return

    def _tick_safely(self, tick: Callable[[], None]) -> None:
        try:
            tick()
        except Exception:
            self._log_once("sampler", "tick")

    def _drain(self) -> None:
        queue = self.queue
        popleft = queue.popleft
        tick = self._tick
        while queue:
            n = min(len(queue), self.batch_size)
            batch = [popleft() for _ in range(n)]
            self._inflight = batch
            records = to_records(batch, self.resource) if self._records else []
            for exporter, export_spans in self._routes:
                try:
                    if export_spans is None:
                        exporter.export(records)
                    else:
                        export_spans(batch, self.resource)
                except Exception:
                    dropped.add((f"exporter_error:{exporter.name}",), n)
                    self._log_once(exporter.name, "export")
            self._inflight = None
            if queue and tick is not None:  # refilled meanwhile: the sampler's clock goes on
                self._tick_safely(tick)

    def _call_exporters(self, method: str) -> None:
        for exporter in self.exporters:
            try:
                getattr(exporter, method)()
            except Exception:
                self._log_once(exporter.name, method)

    def _log_once(self, name: str, what: str) -> None:
        key = f"{name}:{what}"
        if key not in self._failed_once:
            self._failed_once.add(key)
            _log.warning("obs-middleware: exporter %r failed to %s", name, what, exc_info=True)

    # -- control -------------------------------------------------------------------------------
    def flush(self, timeout: float = 5.0) -> bool:
        """Export everything queued before this call; False if ``timeout`` (s) passed first."""
        if threading.current_thread() is self._thread:
            self._drain()
            return True
        if self._closed:
            return not self.queue
        if not self.started:
            if self._closed or not (self.queue or self.exporters):
                return True
            self._start()
        deadline = time.monotonic() + timeout
        with self._cond:
            self._requested += 1
            target = self._requested
            self._wake.set()
            while self._done < target:
                left = deadline - time.monotonic()
                if left <= 0 or not self._alive():
                    return False
                self._cond.wait(left)
        return True

    def drain(self, timeout: float) -> bool:
        """Flush within ``timeout`` (s); then count and drop what is still queued or in flight.

        For a process about to end that keeps its pipeline open (a server finishing requests after
        SIGTERM): nothing is left behind uncounted, whichever hook turns out to be the last.
        """
        if self.flush(timeout):
            return True
        self._count_leftovers()
        return False

    def shutdown(self, timeout: float = 2.0) -> bool:
        """Flush, then shut the exporters down, within ``timeout`` seconds. Idempotent.

        What is still queued or in flight at the deadline is counted as ``shutdown_timeout``.
        """
        if self._closed:
            return True
        deadline = time.monotonic() + timeout
        if not self.started and self.exporters:
            self._start()
        with self._cond:
            self._stopping = True
            self._requested += 1
            self._wake.set()
        self._closed = True
        self.accepting = False
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(deadline - time.monotonic(), 0))
            if thread.is_alive():
                self._count_leftovers()
                _log.warning("obs-middleware: export did not finish within %.1fs", timeout)
                return False
        return True

    def _count_leftovers(self) -> None:
        # Taken out of the queue one by one: the worker may still be taking its own; each record
        # is either exported by it or counted here. A batch stuck in an exporter is counted once
        # (the process may end before it returns).
        left = 0
        queue = self.queue
        while queue:
            try:
                queue.popleft()
            except IndexError:
                break
            left += 1
        batch = self._inflight
        if batch is not None and batch is not self._counted:
            self._counted = batch
            left += len(batch)
        if left:
            dropped.add(("shutdown_timeout",), left)

    def _alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _after_fork_in_child(self) -> None:
        # The parent exports what it queued; the child starts empty with its own worker, and
        # each exporter lets go of the parent's connections, files and buffers.
        self._reset_threading()
        for exporter in self.exporters:
            after_fork = getattr(exporter, "after_fork", None)
            if after_fork is not None:
                try:
                    after_fork()
                except Exception:
                    self._log_once(exporter.name, "reset after fork")


_pipelines: weakref.WeakSet[Pipeline] = weakref.WeakSet()


def _after_fork() -> None:
    for pipeline in list(_pipelines):
        pipeline._after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork)
