"""``configure()`` and the process lifecycle: wiring core → pipeline → exporters, flush, shutdown.

Until ``configure()`` is called, the first finished span configures from ``OBS_*`` variables and
defaults (console exporter on a TTY, JSON lines on stdout otherwise, when ``OBS_EXPORTERS`` names
none; an entry that cannot be built is warned about and exports nothing, see ``build_config``).

Shutdown has one deadline (``PipelineOptions.shutdown_timeout_s``), however many hooks run: the
first to start (ASGI lifespan shutdown, ``shutdown()``, SIGTERM, interpreter exit) fixes it, the
later ones get what is left. Each stops waiting on backends (``_delivery.stop_waiting``: requests
in flight are cut, batches go to the spool, or get one short attempt) and counts what the deadline
leaves (``shutdown_timeout``).
"""

from __future__ import annotations

import atexit
import importlib
import logging
import os
import signal
import sys
import threading
import time
import warnings
import weakref
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from types import FrameType
from typing import Any

from . import _delivery
from ._core import events as _events
from ._core import runtime as _runtime
from ._core import span as _span
from ._core.config import (
    Config,
    HttpOptions,
    PipelineOptions,
    PricingOptions,
    RedactionOptions,
    SamplingOptions,
    as_tuple,
    from_env,
    merge,
)
from ._core.forks import renew_after_fork
from ._core.redact import compile_secret_patterns
from ._core.sampling import RateLimiter, head_threshold, make_export_test, make_finisher
from ._log_events import set_log_rate
from ._pipeline import Exporter, Pipeline
from ._record import Resource
from .exporters import ConsoleExporter, JsonlExporter, MemoryExporter
from .logs import root_handler

__all__ = ["configure", "current_config", "flush", "mark_private", "set_user", "shutdown"]

_log = logging.getLogger("obs_middleware")
_lock = threading.RLock()
renew_after_fork(globals(), "_lock", threading.RLock)
_config: Config | None = None
_pipeline: Pipeline | None = None
_limiters: weakref.WeakKeyDictionary[Pipeline, RateLimiter] = weakref.WeakKeyDictionary()
_hooks_installed = False
_deadline: float | None = None  # monotonic; fixed by the first shutdown hook to run
# Config fields a ``configure()`` cannot change while a scope pinned them (``testing.capture``:
# an app module that configures at import, inside the test, still exports to the capture).
_pinned: dict[str, Any] = {}


def _exporter_from_spec(spec: Any) -> Exporter:
    if not isinstance(spec, str):
        if not all(hasattr(spec, m) for m in ("export", "flush", "shutdown")):
            raise ValueError(f"exporter {spec!r} lacks export/flush/shutdown")
        return spec  # type: ignore[no-any-return]
    kind, _, arg = spec.partition(":")
    if kind == "console":
        return ConsoleExporter()
    if kind == "jsonl":
        return JsonlExporter(arg or None)
    if kind == "memory":
        return MemoryExporter()
    if kind == "sqlite":  # imported on use: most processes never open a store
        from .exporters.sqlite import SqliteExporter  # noqa: PLC0415

        return SqliteExporter(arg or None)
    if kind in _NETWORK_EXPORTERS:  # imported on use: optional dependencies (otlp, prometheus)
        module = importlib.import_module(f"{__package__}.exporters.{kind}")
        return module.from_spec(arg)  # type: ignore[no-any-return]
    raise ValueError(
        f"unknown exporter {spec!r} (known: console, jsonl[:path], memory, sqlite[:path], "
        "otlp[:url], prometheus[:[addr:]port], tinybird[:datasource], clickhouse[:url], "
        "http:url, none)"
    )


# ``name[:argument]`` → module ``exporters.<name>`` with ``from_spec(argument)``.
_NETWORK_EXPORTERS = frozenset({"otlp", "prometheus", "tinybird", "clickhouse", "http"})


def _resolve_exporters(specs: tuple[Any, ...]) -> list[Exporter]:
    if not specs:
        return [ConsoleExporter() if sys.stdout.isatty() else JsonlExporter()]
    if specs == ("none",):
        return []
    return [_exporter_from_spec(s) for s in specs]


def configure(
    *,
    service: str | None = None,
    version: str | None = None,
    environment: str | None = None,
    worker_id: str | None = None,
    machine_id: str | None = None,
    exporters: str | Sequence[str | Exporter] | None = None,
    sampling: SamplingOptions | None = None,
    pipeline: PipelineOptions | None = None,
    http: HttpOptions | None = None,
    redaction: RedactionOptions | None = None,
    pricing: PricingOptions | None = None,
    logs: str | None = None,
    logs_per_s: float | None = None,
    runtime_metrics: bool | None = None,
) -> Config:
    """Configure obs-middleware for this process; returns the effective ``Config``.

    Every argument falls back to its ``OBS_*`` environment variable, then to its default (every
    option and variable: docs/CONFIGURATION.md, generated from ``_core/config.SETTINGS``).
    ``exporters`` takes names (``"console"``, ``"jsonl"``, ``"jsonl:/path/file.jsonl"``,
    ``"memory"``, ``"none"``) or exporter objects. Every record carries ``service.version``,
    ``host.name``, ``service.instance.id`` (random, new in a forked child) and, when set,
    ``worker.id``/``machine.id`` (``OBS_WORKER_ID``/``OBS_MACHINE_ID``). ``pricing`` overrides or
    extends the prices behind ``cost.usd``. ``logs="warning"`` (``OBS_LOGS``; default ``"off"``)
    exports log records at that level and above through every exporter (a ``logs.LogHandler`` on
    the root logger, removed when ``logs`` is off again or at ``shutdown()``), at most
    ``logs_per_s`` a second (``OBS_LOGS_PER_S``, default 100; the rest counted). Calling again
    replaces the configuration: what the previous pipeline queued is flushed first. Inside
    ``obs_middleware.testing.capture()`` (the ``obs_capture`` fixture) the capture keeps its
    exporter, sampling and pipeline options; the rest applies until the capture ends. Raises
    ``ValueError`` on an invalid option.
    """
    options: dict[str, Any] = {
        "service": service,
        "version": version,
        "environment": environment,
        "worker_id": worker_id,
        "machine_id": machine_id,
        "exporters": exporters,
        "sampling": sampling,
        "pipeline": pipeline,
        "http": http,
        "redaction": redaction,
        "pricing": pricing,
        "logs": logs,
        "logs_per_s": logs_per_s,
        "runtime_metrics": runtime_metrics,
    }
    options.update(_pinned)  # pinned exporters are objects: the app's are never built
    config = build_config(**options)
    old = activate(config)
    if old is not None:
        old.shutdown(config.pipeline.shutdown_timeout_s)
    return config


def build_config(**options: Any) -> Config:
    """The effective ``Config`` for ``configure(**options)``, exporters resolved to objects.

    Exporters named by the caller must exist and have what they need (``ValueError``). An
    ``OBS_EXPORTERS`` entry that is unknown or lacks what it needs (a token, a URL, an optional
    dependency) is warned about once and skipped, so a deployment typo never breaks the app; and
    nothing takes its place: the development default (records on stdout) applies only when the
    variable names no exporter at all, never as a fallback that would print prompts and user ids
    where the logs go.
    """
    options["exporters"] = as_tuple(options.get("exporters"))
    config = merge(from_env(), **options)
    if options["exporters"] is not None:
        return merge(config, exporters=tuple(_resolve_exporters(config.exporters)))
    resolved: list[Exporter] = []
    for spec in config.exporters:
        try:
            resolved.extend(_resolve_exporters((spec,)))
        except (ValueError, ImportError) as exc:
            warnings.warn(
                f"obs-middleware: OBS_EXPORTERS entry {spec!r} skipped, nothing is exported "
                f"there: {exc}",
                stacklevel=2,
            )
    if not config.exporters:
        resolved = _resolve_exporters(())  # the development default
    return merge(config, exporters=tuple(resolved))


def activate(config: Config) -> Pipeline | None:
    """Make ``config`` current with a new pipeline; returns the previous pipeline (not stopped)."""
    global _config, _pipeline
    new = _new_pipeline(config)
    with _lock:
        old = _pipeline
        _config, _pipeline = config, new
        _running()
        _wire(config, new)
        _attach_logs(config.logs)
        _install_process_hooks(config.pipeline.flush_on_sigterm)
    return old


def _new_pipeline(config: Config) -> Pipeline:
    opts = config.pipeline
    sampling = config.sampling
    limiter = RateLimiter(sampling.traces_per_s, sampling.ratio) if sampling.traces_per_s else None

    def tick() -> None:  # only the current pipeline's sampler moves the shared threshold
        if limiter is not None and _pipeline is pipeline:
            limiter.tick()

    pipeline = Pipeline(
        config.exporters,
        Resource(
            config.service,
            config.environment,
            config.version,
            worker_id=config.worker_id,
            machine_id=config.machine_id,
        ),
        queue_size=opts.queue_size,
        batch_size=opts.batch_size,
        interval_s=opts.interval_s,
        tick=tick if limiter is not None else None,
    )
    if limiter is not None:
        _limiters[pipeline] = limiter
    return pipeline


def _wire(config: Config, pipeline: Pipeline) -> None:
    """Point the core's hooks at ``pipeline``: secret patterns, head sampling, the finisher."""
    compile_secret_patterns(config.redaction.extra_patterns)
    _runtime.enable(config.runtime_metrics)
    set_log_rate(config.logs_per_s)
    limiter = _limiters.get(pipeline)
    _span.sample_threshold = head_threshold(limiter.in_force if limiter else config.sampling.ratio)
    submit = pipeline.submitter()
    _span.on_finish = make_finisher(submit, config.sampling, limiter)
    _span.may_export = make_export_test(submit, config.sampling)


def _attach_logs(level: str) -> None:
    """The root logger's ``LogHandler`` at ``level`` (``"off"``: none); under ``_lock``."""
    root_handler(None if level == "off" else level)


def restore(config: Config | None, pipeline: Pipeline | None) -> None:
    """Reinstate a configuration and pipeline saved earlier (test helpers)."""
    global _config, _pipeline
    with _lock:
        _config, _pipeline = config, pipeline
        _running()
        if config is None or pipeline is None:
            _span.on_finish = _first_use
            _span.may_export = _span.any_may
            _span.sample_threshold = head_threshold(1.0)
            _attach_logs("off")
            _runtime.enable(False)  # as before the first configuration
        else:
            _wire(config, pipeline)
            _attach_logs(config.logs)


@contextmanager
def scoped(
    config: Config, shutdown_timeout: float = 2.0, *, pin: Iterable[str] = ()
) -> Iterator[Pipeline]:
    """Make ``config`` current with its own pipeline for a block, then shut that pipeline down
    and reinstate the previous configuration (``testing.capture`` and test fixtures).

    ``pin``: names of ``Config`` fields (``"exporters"``, ``"sampling"``…) that a ``configure()``
    inside the block keeps at ``config``'s values; what such a call set otherwise lasts until the
    block ends. Unlike ``configure`` it installs no process hooks of its own beyond what
    ``config`` asks for.
    """
    global _pinned
    with _lock:
        saved = (_config, _pipeline)
        saved_pins = _pinned
        activate(config)
        own = _pipeline
        _pinned = {name: getattr(config, name) for name in pin}
    assert own is not None
    try:
        yield own
    finally:
        with _lock:
            _pinned = saved_pins
            last = _pipeline
        if last is not None and last is not own and last is not saved[1]:
            last.shutdown(shutdown_timeout)  # made by a configure() inside the block
        own.shutdown(shutdown_timeout)
        restore(*saved)


def current_config() -> Config:
    """The effective configuration (configuring from the environment on first use)."""
    config = _config
    if config is None:
        with _lock:
            if _config is None:
                configure()
            config = _config
    assert config is not None
    return config


def current_pipeline() -> Pipeline | None:
    """The pipeline of the current configuration (None before the first use)."""
    return _pipeline


def _first_use(item: _span.Span | _span.Event) -> None:
    try:
        current_config()
    except Exception:  # never let a bad environment reach user code: export nothing
        _log.warning("obs-middleware: configuration failed; telemetry disabled", exc_info=True)
        activate(Config())
    _span.on_finish(item)


_span.on_finish = _first_use


def flush(timeout: float = 5.0) -> bool:
    """Hand every queued event to its handler (``obs.attach``), then export everything finished
    so far; False if ``timeout`` seconds passed first."""
    deadline = time.monotonic() + timeout
    handled = _events.flush(timeout)  # detached handlers' queues too (events.flush)
    pipeline = _pipeline
    return (True if pipeline is None else pipeline.flush(_time_left(deadline))) and handled


def shutdown(timeout: float | None = None) -> bool:
    """Export what is queued and close the exporters within ``timeout`` (default: the configured
    deadline, or what is left of it when shutdown already began).

    Backends are no longer waited on: a request in flight is cut, and what is queued goes to the
    exporters' disk spool when they have one, else gets one short attempt; what remains at the
    deadline is counted in ``obs.dropped``. Called at exit and on SIGTERM; later spans are dropped
    and counted as ``closed``.
    """
    with _lock:
        _attach_logs("off")  # records logged from here on would be dropped as ``closed``
    pipeline = _pipeline
    if pipeline is None:
        return True
    deadline = _shutdown_deadline(timeout)
    _delivery.stop_waiting()
    return pipeline.shutdown(_time_left(deadline))


def _shutdown_deadline(timeout: float | None = None) -> float:
    """The shutdown deadline, fixed by the first hook to ask; an explicit ``timeout`` may shorten
    it for its caller."""
    global _deadline
    now = time.monotonic()
    with _lock:
        if _deadline is None:
            limit = current_config().pipeline.shutdown_timeout_s if timeout is None else timeout
            _deadline = now + limit
        deadline = _deadline
    return deadline if timeout is None else min(deadline, now + timeout)


def _time_left(deadline: float) -> float:
    return max(deadline - time.monotonic(), 0.0)


def _running() -> None:
    """The process serves again (a new configuration, a server starting): no shutdown under way."""
    global _deadline
    _deadline = None
    _delivery.resume()


def server_started() -> None:
    """An ASGI server started this app (lifespan startup): an earlier lifespan shutdown did not
    end the process (a test client, a restarted server), so its deadline no longer applies."""
    global _deadline
    if not _delivery.exiting():
        _deadline = None


def server_stopping() -> bool:
    """The ASGI lifespan shutdown's flush, within the shutdown deadline; False if it ran out.

    After SIGTERM reached us this may be the last hook (uvicorn then re-raises SIGTERM with the
    default action): what the deadline leaves is counted. Otherwise a later hook follows (exit,
    or SIGTERM re-raised to our handler) and finishes the job: the flush stops early enough to
    leave it a quarter of the deadline, time to cut a stuck request and spool the rest.
    """
    pipeline = _pipeline
    if pipeline is None:
        return True
    left = _time_left(_shutdown_deadline())
    if _delivery.exiting():
        return pipeline.drain(left)
    reserve = current_config().pipeline.shutdown_timeout_s / 4
    return pipeline.flush(max(left - reserve, 0.0))


def set_user(user_id: object, tier: str | None = None) -> None:
    """Attach a user (and pricing tier) to the current trace: every record of it carries them.

    Outside any span this does nothing. The id is converted with ``str()``; pass an opaque id,
    not an e-mail address, unless you mean to export it.
    """
    current = _span.current_span()
    if current is not None:
        local = current.local
        local.user_id = None if user_id is None else str(user_id)
        if tier is not None:
            local.tier = tier


def mark_private() -> None:
    """Mark the current trace private: prompts and inputs of its AI calls, its error messages,
    captured log messages and job progress messages export as ``[PRIVATE]``.

    Outside any span this does nothing.
    """
    current = _span.current_span()
    if current is not None:
        current.local.private = True


def _install_process_hooks(flush_on_sigterm: bool) -> None:
    global _hooks_installed
    if _hooks_installed:
        return
    _hooks_installed = True
    atexit.register(_at_exit)
    if flush_on_sigterm and threading.current_thread() is threading.main_thread():
        try:
            previous = signal.getsignal(signal.SIGTERM)
            signal.signal(signal.SIGTERM, _sigterm_handler(previous))
        except (ValueError, OSError):  # not allowed here (embedded interpreter): atexit remains
            pass


def _at_exit() -> None:
    try:
        shutdown()
    except Exception:  # never turn a clean exit into a traceback
        _log.debug("obs-middleware: shutdown at exit failed", exc_info=True)


def _sigterm_handler(previous: Any) -> Any:
    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        if previous == signal.SIG_IGN:  # the process keeps running: a flush, no shutdown
            flush(current_config().pipeline.shutdown_timeout_s)
        elif callable(previous):
            # The server (gunicorn, uvicorn) stops gracefully and may still finish requests: the
            # pipeline stays open, and this drain may be the last chance (uvicorn re-raises
            # SIGTERM with the default action after its lifespan shutdown, skipping ``atexit``).
            _drain_for_exit()
            previous(signum, frame)
        else:
            shutdown()
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

    return on_sigterm


def _drain_for_exit() -> None:
    pipeline = _pipeline
    if pipeline is not None:
        deadline = _shutdown_deadline()
        _delivery.stop_waiting()
        pipeline.drain(_time_left(deadline))
