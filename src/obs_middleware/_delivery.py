"""Delivery shared by the network exporters: timeout, retry, circuit breaker, disk spool, bisection.

An exporter supplies one function, ``send(records, timeout) -> Result``, that encodes a batch and
makes one request. ``Delivery.deliver(records)`` (called on the export worker thread) then:

- retries a failed request (429, 5xx, connection errors, timeouts) with exponential backoff and
  full jitter, honouring ``Retry-After``, within ``retry_budget_s`` per batch;
- bisects a batch the backend refuses as too large (413, or over the exporter's own limit), so
  one oversized record costs only itself;
- stops calling a backend after ``breaker_failures`` consecutive failures (circuit open), and lets
  one probe through after ``breaker_cooldown_s`` (half-open);
- writes what could not be delivered to the disk spool (size-capped, fsync'd in batches) and
  replays it, in order, once the backend answers again. The spool is on by default, in a folder
  of the platform's state directory (else its temp directory) per exporter and destination,
  shared safely by the processes of one host that export to the same place; switched off
  (``spool_dir=None``, ``OBS_SPOOL_DIR=off``) what could not be delivered is dropped, counted;
- counts everything: ``obs.exporter.exported``, ``obs.exporter.retries``, ``obs.dropped`` (reason
  ``<why>:<exporter>``), ``obs.exporter.spool_bytes``, ``obs.exporter.breaker_state``.

Nothing here starts a thread: retries and replays run when the worker calls ``deliver`` or
``flush``. Requests made while delivering run with ``EXPORTING`` set, so instrumentation of HTTP
clients can recognise (and skip) our own traffic.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Sequence
from http.client import HTTPException

from ._core.context import EXPORTING
from ._core.metrics import dropped, registry
from ._delivery_options import (
    AUTO_SPOOL,
    OK,
    Breaker,
    DeliveryOptions,
    Outcome,
    Result,
    auto_spool_dir,
    classify_status,
    default_spool_root,
)
from ._record import Record
from ._spool import SPOOL_SUPPORTED, Spool

__all__ = [
    "AUTO_SPOOL",
    "OK",
    "Breaker",
    "Delivery",
    "DeliveryOptions",
    "Outcome",
    "Result",
    "classify_status",
    "default_spool_root",
]

_log = logging.getLogger("obs_middleware")


_live: weakref.WeakSet[Delivery] = weakref.WeakSet()
_exiting = threading.Event()
_EXIT_TIMEOUT_S = 0.5

exported = registry.counter(
    "obs.exporter.exported", ("exporter",), "1", "Records delivered to a backend."
)
retries = registry.counter(
    "obs.exporter.retries", ("exporter",), "1", "Requests retried after a transient failure."
)


# -- delivery -------------------------------------------------------------------------------------
Send = Callable[[Sequence[Record], float], Result]


class Delivery:
    """Retry, breaker, bisection and spool around one exporter's ``send``.

    ``destination`` names where ``send`` delivers and as whom (URL, credentials): with the
    default ``AUTO_SPOOL`` it picks the spool folder (hashed), so only processes delivering to
    the same place share, and replay, each other's batches. ``deliver``, ``flush`` and ``close``
    are called from the export worker thread only.
    """

    def __init__(
        self,
        name: str,
        send: Send,
        options: DeliveryOptions | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        interrupt: Callable[[], None] | None = None,
        destination: str = "",
    ) -> None:
        self.name = name
        self.send = send
        self.interrupt = interrupt
        self.options = options = options or DeliveryOptions()
        self.clock = clock
        self._labels = (name,)
        self.breaker = Breaker(options.breaker_failures, options.breaker_cooldown_s, clock)
        self.spool = self._open_spool(options, destination)
        self._stop = threading.Event()  # no more waiting on the backend: closed, or exiting
        self._closed = False
        self._idle = threading.Event()  # clear while a request is in flight
        self._idle.set()
        self._sent_at = 0.0  # when the request in flight started (monotonic)
        # Per delivery (one per exporter), not the process-wide guard of ``_core.internal``: a
        # second exporter of the same name (a later ``configure()``) reports its first failure.
        self._warned = False
        self._exit_failed = False
        _live.add(self)

    def _open_spool(self, options: DeliveryOptions, destination: str) -> Spool | None:
        directory = options.spool_dir
        if directory == AUTO_SPOOL:
            directory = auto_spool_dir(self.name, destination) if SPOOL_SUPPORTED else None
            if directory is None:
                if SPOOL_SUPPORTED:
                    warnings.warn(
                        f"obs-middleware: exporter {self.name!r}: no writable state or temp "
                        "directory for the disk spool; batches a backend does not take are "
                        "dropped (counted). Set OBS_SPOOL_DIR.",
                        stacklevel=4,
                    )
                return None
        if not directory:
            return None
        try:
            return Spool(directory, options.spool_max_bytes, options.spool_fsync_s)
        except OSError as exc:
            warnings.warn(
                f"obs-middleware: exporter {self.name!r}: spool {directory!r} unusable ({exc}); "
                "batches a backend does not take are dropped (counted)",
                stacklevel=4,
            )
            return None

    # -- public ------------------------------------------------------------------------------------
    def deliver(self, records: Sequence[Record]) -> None:
        """Send one batch now (retrying within budget), else spool or drop it, counted."""
        if not records:
            return
        spool = self.spool
        if _exiting.is_set():
            self._deliver_at_exit(records)
            return
        if spool is not None and spool.has_data():
            # Order: once anything waits on disk, new batches queue behind it.
            self._to_spool(records)
            self.replay(self.options.timeout_s)
            return
        failed = self._send_with_retry(records)
        if failed:
            if spool is not None:
                self._to_spool(failed)
            elif _exiting.is_set():  # the batch in flight when the process stopped waiting
                self._exit_failed = True
                self._drop("shutdown", failed)
            else:
                self._drop("breaker_open" if self.breaker.state else "retries_exhausted", failed)

    def replay(self, budget_s: float) -> None:
        """Send spooled batches, oldest first, while the backend answers and time remains."""
        spool = self.spool
        if spool is None or _exiting.is_set() or not self.breaker.allow():
            return
        deadline = self.clock() + budget_s
        try:
            # This process's open segment is sealed only once every older one went through: a
            # long outage keeps appending to one segment instead of sealing one per probe.
            if self._replay_sealed(spool, deadline):
                spool.seal()
                self._replay_sealed(spool, deadline)
        except OSError:
            _log.warning("obs-middleware: %s spool replay failed", self.name, exc_info=True)

    def _replay_sealed(self, spool: Spool, deadline: float) -> bool:
        """Send the sealed segments' batches, oldest first; True when all of them went through."""
        batches = spool.batches()
        try:
            for records in batches:
                pending, retry_after = self._send_once(records)
                if pending:
                    self.breaker.failure(retry_after)
                    undelivered = [r for chunk in pending for r in chunk]
                    if len(undelivered) == len(records):
                        return False  # nothing went through: the batch stays first in line
                    # Part of a bisected batch went through: requeue only the rest (exactly once
                    # beats order here).
                    self._to_spool(undelivered)
                else:
                    self.breaker.success()
                spool.ack()
                if self.clock() >= deadline or not self.breaker.allow():
                    return False
            return True
        finally:
            batches.close()

    def flush(self) -> None:
        """Replay what the spool holds, within ``flush_budget_s``."""
        self.replay(self.options.flush_budget_s)
        if self.spool is not None:
            self.spool.seal()

    def close(self) -> None:
        """Stop retrying and seal the spool; no delivery follows."""
        self._closed = True
        self._stop.set()
        if self.spool is not None:
            self.spool.close()

    def after_fork(self) -> None:
        """In a forked child (the exporter's ``after_fork``): fresh thread state, own spool segment.

        The parent keeps delivering, spooling and replaying what it holds; nothing is sent here.
        """
        stopped = self._stop.is_set()
        self._stop = threading.Event()  # its lock may be held by a thread the child lacks
        if stopped:
            self._stop.set()
        self._idle = threading.Event()  # no request of the child's is in flight
        self._idle.set()
        if self.spool is not None:
            self.spool.after_fork()

    # -- internals ---------------------------------------------------------------------------------
    def _deliver_at_exit(self, records: Sequence[Record]) -> None:
        # The process is exiting: the spool takes everything (disk is fast and certain); without
        # one, a single short attempt, and after a failure no more waiting on the backend.
        if self.spool is not None:
            self._to_spool(records)
        elif self._exit_failed or not self.breaker.allow():
            self._drop("shutdown", records)
        else:
            failed, _ = self._send_once(records)
            if failed:
                self._exit_failed = True
                self._drop("shutdown", [r for chunk in failed for r in chunk])

    def timeout(self) -> float:
        """The timeout for a request now: ``timeout_s``, or at most 0.5 s once exiting."""
        if _exiting.is_set() or not threading.main_thread().is_alive():
            return min(self.options.timeout_s, _EXIT_TIMEOUT_S)
        return self.options.timeout_s

    def _send_with_retry(self, records: Sequence[Record]) -> list[Record]:
        """Deliver ``records``; return those still undelivered after the retry budget."""
        opts = self.options
        start = self.clock()
        pending: list[Sequence[Record]] = [records]
        attempt = 0
        while pending:
            if not self.breaker.allow() or self._stop.is_set():
                break
            attempt += 1
            failed: list[Sequence[Record]] = []
            retry_after: float | None = None
            for chunk in pending:
                left, after = self._send_once(chunk)
                failed.extend(left)
                retry_after = after if after is not None else retry_after
            if not failed:
                self.breaker.success()
                return []
            self.breaker.failure(retry_after)
            pending = failed
            if attempt >= opts.max_attempts or _exiting.is_set():
                break
            delay = random.uniform(0, min(opts.backoff_max_s, opts.backoff_s * 2 ** (attempt - 1)))
            delay = max(delay, retry_after or 0.0)
            if self.clock() - start + delay > opts.retry_budget_s:
                break
            retries.add(self._labels)
            if self._stop.wait(delay):
                break
        return [r for chunk in pending for r in chunk]

    def _send_once(self, records: Sequence[Record]) -> tuple[list[Sequence[Record]], float | None]:
        """One request (bisecting on "too large"); returns the chunks to retry and Retry-After."""
        token = EXPORTING.set(True)
        self._sent_at = time.monotonic()
        self._idle.clear()
        try:
            result = self.send(records, self.timeout())
        except (OSError, HTTPException) as exc:  # refused, reset, timed out, malformed reply
            result = Result(Outcome.RETRY, None, f"{type(exc).__name__}: {exc}")
        except Exception:  # our own bug (encoding): retrying or spooling would loop forever
            _log.warning("obs-middleware: exporter %r failed", self.name, exc_info=True)
            result = Result(Outcome.REJECTED, None, "")
            self._drop("exporter_error", records)
            return [], None
        finally:
            self._idle.set()
            EXPORTING.reset(token)
        outcome = result.outcome
        if outcome is Outcome.OK:
            exported.add(self._labels, len(records))
            return [], None
        if outcome is Outcome.TOO_LARGE:
            if len(records) == 1:
                self._drop("too_large", records)
                return [], None
            mid = len(records) // 2
            left, after_l = self._send_once(records[:mid])
            right, after_r = self._send_once(records[mid:])
            return left + right, after_l if after_l is not None else after_r
        if outcome is Outcome.REJECTED:
            self._drop("rejected", records, result.detail)
            return [], None
        self._warn(result.detail)
        return [records], result.retry_after

    def _to_spool(self, records: Sequence[Record]) -> None:
        assert self.spool is not None
        try:
            if not self.spool.append(records):
                self._drop("spool_full", records)
        except OSError:
            _log.warning("obs-middleware: %s could not write its spool", self.name, exc_info=True)
            self._drop("spool_error", records)

    def _drop(self, reason: str, records: Sequence[Record], detail: str = "") -> None:
        dropped.add((f"{reason}:{self.name}",), len(records))
        if detail:
            self._warn(detail)

    def _warn(self, detail: str) -> None:
        if not self._warned:
            self._warned = True
            _log.warning(
                "obs-middleware: exporter %r: %s (further failures counted)", self.name, detail
            )


# Several deliveries may share an exporter name (two OTLP collectors; OTLP's spans and its log
# records): their spools add up, and the worst breaker state stands for them.
def _spool_bytes() -> dict[tuple[str, ...], float]:
    total: dict[tuple[str, ...], float] = {}
    for d in list(_live):
        if d.spool is not None:
            total[d.name,] = total.get((d.name,), 0.0) + d.spool.bytes
    return total


def _breaker_states() -> dict[tuple[str, ...], float]:
    worst: dict[tuple[str, ...], float] = {}
    for d in list(_live):
        worst[d.name,] = max(worst.get((d.name,), 0.0), float(d.breaker.state))
    return worst


registry.gauge(
    "obs.exporter.spool_bytes",
    ("exporter",),
    _spool_bytes,
    "By",
    "Bytes waiting in the disk spool.",
)
registry.gauge(
    "obs.exporter.breaker_state",
    ("exporter",),
    _breaker_states,
    "1",
    "Circuit breaker per exporter: 0 closed, 1 half-open, 2 open.",
)


def stop_waiting() -> None:
    """Stop waiting on backends: the process is shutting down (exit, SIGTERM, ``obs.shutdown()``).

    From then on every delivery hands its batches to the spool, or without one makes a single
    short attempt (0.5 s at most) and counts the rest (``shutdown:<exporter>``). A retry backoff
    is woken, and a request in flight gets what a short attempt gets: once in flight that long,
    it is cut (``interrupt``), so the batch the worker holds reaches the spool instead of waiting
    out a 5 s timeout on a hung backend (cut at once, a request a healthy backend was answering
    would be delivered and spooled, or counted, too). Only the first call acts.
    """
    if _exiting.is_set():
        return
    _exiting.set()
    deliveries = list(_live)
    for delivery in deliveries:
        delivery._stop.set()  # wakes a retry backoff; no further retry of the batch in flight
    for delivery in deliveries:
        if delivery.interrupt is None or delivery._idle.is_set():
            continue
        grace = delivery._sent_at + _EXIT_TIMEOUT_S - time.monotonic()
        if delivery._idle.wait(max(grace, 0.0)):
            continue  # answered in time (a request started since is capped at 0.5 s)
        try:
            delivery.interrupt()
        except Exception:  # never turn a clean exit into a traceback
            _log.debug("obs-middleware: interrupting %s failed", delivery.name, exc_info=True)


def exiting() -> bool:
    """Tell whether ``stop_waiting()`` was called (and no new configuration followed)."""
    return _exiting.is_set()


def resume() -> None:
    """Wait on backends again: a new configuration after ``obs.shutdown()`` (tests, restarts)."""
    if not _exiting.is_set():
        return
    _exiting.clear()
    for delivery in list(_live):
        if not delivery._closed:
            delivery._stop.clear()


# ``threading`` runs these before the interpreter waits for threads and before ``atexit``, so
# the final flush starts without waiting on a hung backend.
_register_atexit = getattr(threading, "_register_atexit", None)
if _register_atexit is not None:
    _register_atexit(stop_waiting)
