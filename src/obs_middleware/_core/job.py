"""Worker jobs: one span per job, lifecycle events and ``job.*`` metrics.

``obs.job(...)`` is a context manager (sync and async). Inside, AI calls, queries and HTTP calls
nest under the job span, so one job is one trace (or a part of the caller's trace).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterator
from types import TracebackType
from typing import Any

from . import span as _span
from .context import parse_traceparent
from .metrics import registry
from .redact import PRIVATE, scrub
from .span import RemoteParent

__all__ = ["Job", "job"]

job_duration = registry.histogram(
    "job.duration",
    ("job.service_type", "job.status"),
    "ms",
    "Duration of worker jobs, from start to completion or failure.",
)
registry.count_view("job.runs", job_duration, "Worker jobs finished.")
job_queue_time = registry.histogram(
    "job.queue_time",
    ("job.service_type",),
    "ms",
    "Time jobs waited between being queued and being received.",
)
job_failures = registry.counter(
    "job.failures", ("job.service_type", "error.type"), "1", "Worker jobs that failed."
)
job_active = registry.in_flight(
    "job.active", ("job.service_type",), "1", "Worker jobs in progress."
)

_MAX_MESSAGE = 200


def _wall_s() -> float:
    return (_span.wall_anchor_ns + _span.clock_ns()) / 1e9


def _epoch_s(queued_at: float | _dt.datetime) -> float:
    if isinstance(queued_at, _dt.datetime):
        if queued_at.tzinfo is None:  # naive: taken as UTC, as queues store it
            queued_at = queued_at.replace(tzinfo=_dt.timezone.utc)
        return queued_at.timestamp()
    return float(queued_at)


class Job:
    """A job in progress; ``progress()`` reports how far it got, ``set()`` adds attributes."""

    __slots__ = (
        "_autostart",
        "_fields",
        "_last_progress_ns",
        "_leave",
        "_progress_interval_ns",
        "_started_ns",
        "queue_ms",
        "service_type",
        "span",
    )

    def __init__(  # noqa: PLR0917 - built by job(), which takes keywords
        self,
        job_id: str,
        service_type: str,
        worker_id: str | None,
        machine_id: str | None,
        model: str | None,
        queued_at: float | _dt.datetime | None,
        traceparent: str | None,
        progress_interval_s: float,
        autostart: bool,
        context: RemoteParent | None = None,
    ) -> None:
        self.service_type = service_type
        fields: dict[str, Any] = {"job.id": str(job_id), "job.service_type": service_type}
        if worker_id is not None:
            fields["job.worker_id"] = worker_id
        if machine_id is not None:
            fields["job.machine_id"] = machine_id
        if model is not None:
            fields["ai.model"] = model
        self._fields = fields
        self.queue_ms: float | None = None
        if queued_at is not None:
            self.queue_ms = round(max((_wall_s() - _epoch_s(queued_at)) * 1000, 0.0), 3)
        remote = context
        if remote is None and traceparent:
            remote = parse_traceparent(traceparent.encode("latin-1"))
        self.span = _span.Span(f"job {service_type}", dict(fields), "consumer", remote)
        self._progress_interval_ns = int(progress_interval_s * 1e9)
        self._last_progress_ns = 0
        self._started_ns = 0
        self._autostart = autostart
        self._leave: Iterator[int] | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    def __enter__(self) -> Job:
        span = self.span.start()
        if span.is_root and span.local.request_id is None:
            span.local.request_id = self._fields["job.id"]
        if self.queue_ms is not None:
            span.attrs["job.queue_ms"] = self.queue_ms
            job_queue_time.record((self.service_type,), self.queue_ms)
        span.attrs["job.state"] = "received"
        _span.emit("job.received", **self._fields, **self._queue_field())
        self._leave = job_active.enter((self.service_type,))
        if self._autostart:
            self.start()
        return self

    def start(self) -> None:
        """Mark the work as started (done on entry unless ``autostart=False``)."""
        if self._started_ns:
            return
        self._started_ns = _span.clock_ns()
        attrs = self.span.attrs
        attrs["job.state"] = "started"
        setup_ms = (self._started_ns - self.span.start_ns) / 1e6
        if not self._autostart:
            attrs["job.setup_ms"] = setup_ms
        _span.emit("job.started", **self._fields, **self._queue_field())

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        span = self.span
        if exc is not None:
            span.record_exception(exc)
        duration_ms = (_span.clock_ns() - (self._started_ns or span.start_ns)) / 1e6
        fields = {**self._fields, **self._queue_field(), "duration_ms": duration_ms}
        status = span.status
        if status == "ok":
            span.attrs["job.state"] = "completed"
            _span.emit("job.completed", **fields)
        else:
            span.attrs["job.state"] = "failed"
            error_type = span.error_type or status
            _span.emit(
                "job.failed",
                **fields,
                status=status,
                error_type=error_type,
                error_message=span.error_message,
            )
            job_failures.add((self.service_type, error_type))
        span.end()
        leave, self._leave = self._leave, None
        if leave is not None:
            next(leave)
        job_duration.record((self.service_type, status), duration_ms)

    async def __aenter__(self) -> Job:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    # -- data ------------------------------------------------------------------------------------
    def progress(
        self,
        fraction: float,
        *,
        step: int | None = None,
        total: int | None = None,
        message: str | None = None,
    ) -> None:
        """Report progress (0..1).

        ``job.progress`` events are rate-limited to one per ``progress_interval_s``, except the
        first and completion (1.0); the span attribute ``job.progress`` always holds the latest.
        """
        fraction = min(max(float(fraction), 0.0), 1.0)
        self.span.attrs["job.progress"] = fraction
        now = _span.clock_ns()
        if (
            self._last_progress_ns
            and fraction < 1.0
            and now - self._last_progress_ns < self._progress_interval_ns
        ):
            return
        self._last_progress_ns = now
        fields: dict[str, Any] = {"job.id": self._fields["job.id"], "job.progress": fraction}
        if step is not None:
            fields["job.step"] = step
        if total is not None:
            fields["job.total"] = total
        if message:
            local = getattr(self.span, "local", None)  # None before the job is entered
            private = local is not None and local.private  # its messages may echo its input
            fields["job.message"] = PRIVATE if private else scrub(message)[:_MAX_MESSAGE]
        _span.emit("job.progress", **fields)

    def set(self, **attrs: Any) -> Job:
        """Set attributes on the job span; returns ``self``."""
        self.span.attrs.update(attrs)
        return self

    def _queue_field(self) -> dict[str, float]:
        return {} if self.queue_ms is None else {"queue_ms": self.queue_ms}


def job(
    job_id: str,
    /,
    *,
    service_type: str,
    worker_id: str | None = None,
    machine_id: str | None = None,
    model: str | None = None,
    queued_at: float | _dt.datetime | None = None,
    traceparent: str | None = None,
    context: RemoteParent | None = None,
    progress_interval_s: float = 1.0,
    autostart: bool = True,
) -> Job:
    """Trace one worker job: ``with obs.job(job_id, service_type="render") as j: ...``.

    Records a span ``job <service_type>`` (the trace root, a child of the current span, or of
    the enqueuer's trace: ``context=obs.extract(carrier)`` from a carrier the enqueuer filled
    with ``obs.inject``, or a bare ``traceparent`` string; ``context`` wins when both are given)
    and the events ``job.received``, ``job.started``,
    ``job.progress`` (rate-limited), then ``job.completed`` or ``job.failed`` (with
    ``duration_ms`` from the start, ``queue_ms`` from ``queued_at`` — epoch seconds or a
    datetime, naive = UTC — and the model). ``autostart=False`` defers ``job.started`` to
    ``j.start()`` (time before it: ``job.setup_ms``). Metrics: ``job.duration``/``job.runs``
    by service type and status, ``job.queue_time``, ``job.failures``, ``job.active``.
    An exception is recorded and re-raised.
    """
    return Job(
        job_id,
        service_type,
        worker_id,
        machine_id,
        model,
        queued_at,
        traceparent,
        progress_interval_s,
        autostart,
        context,
    )
