"""Configuration: grouped, frozen option dataclasses, and ``SETTINGS``: every option, its ``OBS_*``
variable (all but two, which are code only) and what it means; docs/CONFIGURATION.md is generated
from it (``_core/variables.py``).

Explicit arguments to ``configure()`` win over the environment, which wins over defaults. An invalid
argument raises ``ValueError`` naming the option; an invalid environment value is warned about once
and replaced by its default, so a typo in a deployment never takes the app down.
"""

from __future__ import annotations

import functools
import json
import os
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, TypeVar, cast

__all__ = [
    "LOG_LEVELS",
    "SETTINGS",
    "Config",
    "HttpOptions",
    "PipelineOptions",
    "PricingOptions",
    "RedactionOptions",
    "SamplingOptions",
    "Setting",
    "from_env",
]

T = TypeVar("T")


@dataclass(frozen=True)
class SamplingOptions:
    """Which traces are exported. Metrics always count every span, at any rate.

    ``traces_per_s``: adaptive export (the default): every new trace is exported until this
    process starts more than this many per second, then head sampling keeps the export at that
    rate (each exported root then carries ``sampling.ratio``; traces left out are counted in
    ``obs.traces.sampled_out``). ``0``: no limit, export every trace.
    ``ratio``: a fixed head-sampling share of new traces on top (an incoming ``traceparent``
    sampled flag wins over both).
    ``slow_ms``: a trace with a span slower than this is kept whatever was sampled.
    ``keep_errors``: a trace with an error is kept whatever was sampled.
    """

    traces_per_s: float = 100.0
    ratio: float = 1.0
    slow_ms: float = 1000.0
    keep_errors: bool = True

    def __post_init__(self) -> None:
        _check(self.traces_per_s >= 0, "sampling.traces_per_s must be >= 0 (0: no limit)")
        _check(0.0 <= self.ratio <= 1.0, "sampling.ratio must be within [0, 1]")
        _check(self.slow_ms > 0, "sampling.slow_ms must be > 0")


@dataclass(frozen=True)
class PipelineOptions:
    """The export queue and worker thread.

    ``queue_size``: records buffered before new ones are dropped (counted in ``obs.dropped``).
    ``batch_size``/``interval_s``: a batch is exported when this many are queued or this often.
    ``shutdown_timeout_s``: one hard deadline for the whole shutdown, however many hooks run
    (ASGI lifespan shutdown, SIGTERM, ``obs.shutdown()``, exit): the first fixes it.
    ``flush_on_sigterm``: chain a SIGTERM handler that hands what is queued to the exporters (their
    spool, or one short attempt) before the previous handler runs.
    """

    queue_size: int = 20_000
    batch_size: int = 512
    interval_s: float = 0.5
    shutdown_timeout_s: float = 2.0
    flush_on_sigterm: bool = True

    def __post_init__(self) -> None:
        _check(self.queue_size > 0, "pipeline.queue_size must be > 0")
        _check(0 < self.batch_size <= self.queue_size, "pipeline.batch_size must be in (0, size]")
        _check(self.interval_s > 0, "pipeline.interval_s must be > 0")
        _check(self.shutdown_timeout_s > 0, "pipeline.shutdown_timeout_s must be > 0")


@dataclass(frozen=True)
class HttpOptions:
    """What the HTTP middleware records.

    ``exclude_paths``: exact paths not traced (no span, no metrics), e.g. health checks; the
    spans and queries made while serving them are dropped with them, counted as
    ``obs.dropped{reason="excluded_path"}``.
    ``capture_headers``: request header names recorded as ``http.request.header.<name>``.
    ``allow_sensitive_headers``: opt-in to capture Authorization/Cookie/API-key headers listed in
    ``capture_headers`` (dropped otherwise).
    ``user_id``: hook ``scope -> user id | None`` called at the end of a request when
    ``obs.set_user`` was not called.
    ``propagate_hosts``/``no_propagate_hosts``: outbound hosts that may / may not receive a
    ``traceparent`` (``*.example.com`` matches subdomains; empty allow list = every host).
    ``known_methods``: request methods recorded as sent (case-sensitive, a full override: OTel's
    HTTP semantic conventions); any other method is recorded as ``_OTHER`` on spans and metrics,
    so clients cannot grow the metric label sets, and the original goes to
    ``http.request.method_original`` on the span.
    """

    exclude_paths: tuple[str, ...] = ("/health", "/healthz", "/livez", "/readyz")
    capture_headers: tuple[str, ...] = ()
    allow_sensitive_headers: bool = False
    request_id_header: str = "x-request-id"
    user_id: Callable[[Mapping[str, Any]], str | None] | None = None
    propagate_hosts: tuple[str, ...] = ()
    no_propagate_hosts: tuple[str, ...] = ()
    known_methods: tuple[str, ...] = (
        "CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "QUERY", "TRACE",
    )  # fmt: skip

    @functools.cached_property
    def known_method_set(self) -> frozenset[str]:
        """``known_methods`` as a set (one lookup per request)."""
        return frozenset(self.known_methods)

    @functools.cached_property
    def request_id_header_bytes(self) -> bytes:
        """``request_id_header`` lower-cased and encoded, as ASGI header names are."""
        return self.request_id_header.lower().encode("latin-1")


@dataclass(frozen=True)
class RedactionOptions:
    """Privacy rules applied before anything is queued for export.

    ``prompt_max_chars``: prompts are truncated to this length (0 drops them).
    ``extra_patterns``: additional regular expressions whose matches become ``[REDACTED]``.
    """

    prompt_max_chars: int = 200
    extra_patterns: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check(self.prompt_max_chars >= 0, "redaction.prompt_max_chars must be >= 0")
        for pattern in self.extra_patterns:
            try:
                re.compile(pattern)
            except (re.error, TypeError) as exc:
                raise ValueError(f"redaction.extra_patterns: {pattern!r}: {exc}") from None


@dataclass(frozen=True)
class PricingOptions:
    """Prices behind ``cost.usd`` on AI spans (shipped table: ``_core/pricing.json``).

    ``prices``: entries merged over the shipped table, same shape (``models``: provider -> model
    -> pricing models; ``defaults``: provider -> pricing models; ``gpu_per_second``: provider ->
    GPU -> USD/s). ``file``: a JSON file of that shape, applied before ``prices``.
    """

    prices: Mapping[str, Any] = field(default_factory=dict, hash=False)
    file: str | None = None


@dataclass(frozen=True)
class Config:
    """The whole configuration; ``obs_middleware.configure()`` builds it."""

    service: str = "app"
    version: str | None = None
    environment: str = "development"
    worker_id: str | None = None
    machine_id: str | None = None
    exporters: tuple[Any, ...] = ()
    sampling: SamplingOptions = field(default_factory=SamplingOptions)
    pipeline: PipelineOptions = field(default_factory=PipelineOptions)
    http: HttpOptions = field(default_factory=HttpOptions)
    redaction: RedactionOptions = field(default_factory=RedactionOptions)
    pricing: PricingOptions = field(default_factory=PricingOptions)
    logs: str = "off"
    logs_per_s: float = 100.0
    runtime_metrics: bool = True

    def __post_init__(self) -> None:
        for name in ("version", "worker_id", "machine_id"):
            value = getattr(self, name)
            _check(value is None or isinstance(value, str), f"{name} must be a string or None")
        _check(
            isinstance(self.logs, str) and self.logs.lower() in LOG_LEVELS,
            f"logs must be one of {', '.join(LOG_LEVELS)} (any case)",
        )
        object.__setattr__(self, "logs", self.logs.lower())  # one spelling for the wiring
        _check(
            isinstance(self.logs_per_s, (int, float)) and self.logs_per_s >= 0,
            "logs_per_s must be a number >= 0 (0: no limit)",
        )


# ``Config.logs``: "off", or the least level of the log records exported.
LOG_LEVELS = ("off", "debug", "info", "warning", "error", "critical")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


@dataclass(frozen=True)
class Setting:
    """One option of ``configure()``: its ``OBS_*`` variable (None: code only) and what it is.

    ``parse(raw, default)`` reads the variable; None: by the type of the default (booleans
    ``1/true/yes/on`` and ``0/false/no/off``, numbers, comma-separated lists, text).
    """

    option: str  # "service", or "group.option": "sampling.ratio"
    variable: str | None
    doc: str
    parse: Callable[[str, Any], Any] | None = None
    default_doc: str | None = None  # the default in words, when its value says too little


def _path_entries(raw: str, default: tuple[str, ...]) -> tuple[str, ...]:
    """``OBS_EXCLUDE_PATHS``: entries add to the default paths; ``-/path`` removes one."""
    paths = list(default)
    for entry in _split(raw):
        if entry.startswith("-"):
            if entry[1:] in paths:
                paths.remove(entry[1:])
        elif entry not in paths:
            paths.append(entry)
    return tuple(paths)


def _patterns(raw: str, default: tuple[str, ...]) -> tuple[str, ...]:
    """``OBS_REDACT_PATTERNS``: one regular expression, or a JSON array of them (commas are
    common inside patterns, so no comma-separated list)."""
    if not raw.lstrip().startswith("["):
        return (raw,)
    value = json.loads(raw)
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise ValueError("expected a JSON array of strings")
    return tuple(value)


# Every option of configure(), in the order of the generated table (docs/CONFIGURATION.md).
SETTINGS: tuple[Setting, ...] = (
    Setting("service", "OBS_SERVICE", "Service name on every record."),
    Setting("version", "OBS_VERSION", "Service version on every record."),
    Setting("environment", "OBS_ENVIRONMENT", "Deployment environment on every record."),
    Setting(
        "worker_id",
        "OBS_WORKER_ID",
        "Worker id on every record (`worker.id`), e.g. the GPU worker or queue consumer.",
    ),
    Setting(
        "machine_id",
        "OBS_MACHINE_ID",
        "Machine id on every record (`machine.id`), e.g. the GPU box or VM.",
    ),
    Setting(
        "exporters",
        "OBS_EXPORTERS",
        "Where telemetry goes, comma-separated: `console`, `jsonl[:path]`, `memory`, "
        "`sqlite[:path]`, `otlp[:url]`, `prometheus[:[addr:]port]`, `tinybird[:datasource]`, "
        "`clickhouse[:url]`, `http:url`, `none`. Exporter objects: in code. An entry that is "
        "unknown or lacks what it needs (a token, a URL) is warned about once on stderr and "
        "exports nothing: the default is used only when the variable names no exporter.",
        default_doc="`console` on a TTY, else `jsonl` (JSON lines on stdout)",
    ),
    Setting(
        "sampling.traces_per_s",
        "OBS_TRACES_PER_S",
        "Adaptive export: every trace until the process starts more than this many per second, "
        "then head sampling at that rate. `0`: no limit.",
    ),
    Setting(
        "sampling.ratio", "OBS_SAMPLE_RATIO", "A fixed head-sampling share of new traces, [0, 1]."
    ),
    Setting(
        "sampling.slow_ms",
        "OBS_SLOW_MS",
        "A trace with a span slower than this (ms) is kept whatever was sampled.",
    ),
    Setting(
        "sampling.keep_errors",
        "OBS_KEEP_ERRORS",
        "A trace with an error is kept whatever was sampled.",
    ),
    Setting(
        "pipeline.queue_size",
        "OBS_QUEUE_SIZE",
        "Records buffered before new ones are dropped (counted in `obs.dropped`).",
    ),
    Setting("pipeline.batch_size", "OBS_BATCH_SIZE", "Records per export batch."),
    Setting("pipeline.interval_s", "OBS_EXPORT_INTERVAL_S", "Longest wait between exports (s)."),
    Setting(
        "pipeline.shutdown_timeout_s",
        "OBS_SHUTDOWN_TIMEOUT_S",
        "One deadline for the whole shutdown (s), however many hooks run.",
    ),
    Setting(
        "pipeline.flush_on_sigterm",
        "OBS_FLUSH_ON_SIGTERM",
        "Chain a SIGTERM handler that hands what is queued to the exporters.",
    ),
    Setting(
        "http.exclude_paths",
        "OBS_EXCLUDE_PATHS",
        "Exact paths not traced: no span, no metrics, and the spans and queries made while "
        "serving them are dropped (counted in `obs.dropped{reason=excluded_path}`). The variable "
        "adds to the defaults; `-/path` removes one: `OBS_EXCLUDE_PATHS=/chat,-/livez`. In code, "
        "`HttpOptions(exclude_paths=...)` replaces them.",
        parse=_path_entries,
    ),
    Setting(
        "http.capture_headers",
        "OBS_CAPTURE_HEADERS",
        "Request headers recorded as `http.request.header.<name>`, comma-separated.",
    ),
    Setting(
        "http.allow_sensitive_headers",
        "OBS_ALLOW_SENSITIVE_HEADERS",
        "Record Authorization, Cookie and API-key headers listed in `capture_headers` "
        "(dropped otherwise).",
    ),
    Setting(
        "http.request_id_header",
        "OBS_REQUEST_ID_HEADER",
        "The correlation-id header read from requests and echoed on responses.",
    ),
    Setting(
        "http.user_id",
        None,
        "Hook `scope -> user id | None` called at the end of a request when `obs.set_user` was "
        "not: a function, so in code only.",
    ),
    Setting(
        "http.propagate_hosts",
        "OBS_PROPAGATE_HOSTS",
        "Outbound hosts that receive a `traceparent` (`*.example.com` matches subdomains); "
        "empty: every host.",
    ),
    Setting(
        "http.no_propagate_hosts",
        "OBS_NO_PROPAGATE_HOSTS",
        "Outbound hosts that never receive a `traceparent`.",
    ),
    Setting(
        "http.known_methods",
        "OBS_HTTP_KNOWN_METHODS",
        "Request methods recorded as sent (a full override); others are recorded as `_OTHER`.",
    ),
    Setting(
        "redaction.prompt_max_chars",
        "OBS_PROMPT_MAX_CHARS",
        "Prompts are truncated to this length (0 drops them).",
    ),
    Setting(
        "redaction.extra_patterns",
        "OBS_REDACT_PATTERNS",
        "More regular expressions whose matches become `[REDACTED]`. The variable: one "
        'pattern, or a JSON array of them (`["acct-[0-9]{6}", "tok_\\\\w+"]`).',
        parse=_patterns,
    ),
    Setting(
        "pricing.prices",
        None,
        "Prices merged over the shipped table: a mapping, so in code, or as a JSON file through "
        "`OBS_PRICING_FILE`.",
    ),
    Setting(
        "pricing.file",
        "OBS_PRICING_FILE",
        "A JSON file of prices, applied before `prices`.",
    ),
    Setting(
        "logs",
        "OBS_LOGS",
        "Export application log records at or above this level (`debug`, `info`, `warning`, "
        "`error`, `critical`) through every exporter, as `log` events of the current trace "
        "(never sampled out; messages scrubbed, `[PRIVATE]` in private requests): a "
        "`LogHandler` on the root logger. `off`: none (`JsonFormatter` and `SpanEventHandler` "
        "still work by hand).",
    ),
    Setting(
        "logs_per_s",
        "OBS_LOGS_PER_S",
        "At most this many log records exported a second (a burst of as many at once); the "
        'rest are counted in `obs.dropped{reason="log_rate"}`, so a flood of warnings never '
        "crowds spans out of the export queue. `0`: no limit.",
    ),
    Setting(
        "runtime_metrics",
        "OBS_RUNTIME_METRICS",
        "Process and runtime metrics (CPU, memory, file descriptors, threads, GC, asyncio loop "
        "delay), read when metrics are collected. `0` turns them off.",
    ),
)

# env var: (group or "" for top level, option, parse)
_ENV: dict[str, tuple[str, str, Callable[[str, Any], Any] | None]] = {
    s.variable: (s.option.rpartition(".")[0], s.option.rpartition(".")[2], s.parse)
    for s in SETTINGS
    if s.variable is not None
}


def _split(raw: str) -> list[str]:
    return [p.strip() for p in raw.split(",") if p.strip()]


def _convert(raw: str, default: Any) -> Any:
    if isinstance(default, bool):
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected a boolean, got {raw!r}")
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    if isinstance(default, tuple):
        return tuple(_split(raw))
    return raw


def from_env(environ: Mapping[str, str] = os.environ) -> Config:
    """A ``Config`` from the ``OBS_*`` variables; bad values warn and keep their default.

    The variables of one option group are validated together (``OBS_QUEUE_SIZE`` and
    ``OBS_BATCH_SIZE`` constrain each other); if the group is invalid as a whole, each variable is
    tried alone so the warning names the culprit.
    """
    groups: dict[str, dict[str, tuple[str, str, Any]]] = {}
    for var, (group, option, parse) in _ENV.items():
        raw = environ.get(var)
        if raw is None:
            continue
        default = getattr(getattr(Config(), group) if group else Config(), option)
        try:
            value = (parse or _convert)(raw, default if default is not None else "")
        except (TypeError, ValueError) as exc:
            warnings.warn(f"obs-middleware: ignoring {var}={raw!r}: {exc}", stacklevel=2)
            continue
        groups.setdefault(group, {})[option] = (var, raw, value)
    config = Config()
    for group, values in groups.items():
        target = getattr(config, group) if group else config
        try:
            target = replace(target, **{o: v for o, (_, _, v) in values.items()})
        except (TypeError, ValueError):
            for option, (var, raw, value) in values.items():
                try:
                    target = replace(target, **{option: value})
                except (TypeError, ValueError) as exc:
                    warnings.warn(f"obs-middleware: ignoring {var}={raw!r}: {exc}", stacklevel=2)
        config = replace(config, **{group: target}) if group else cast(Config, target)  # type: ignore[arg-type]
    return config


def merge(base: Config, **overrides: Any) -> Config:
    """``base`` with the given top-level values or option groups replaced (None = keep)."""
    known = {f.name for f in fields(Config)}
    unknown = set(overrides) - known
    if unknown:
        raise TypeError(f"configure() got unknown options: {', '.join(sorted(unknown))}")
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})


def as_tuple(value: str | Sequence[Any] | None) -> tuple[Any, ...] | None:
    """Normalise a comma-separated string or a sequence to a tuple (None stays None)."""
    if value is None:
        return None
    if isinstance(value, str):
        return tuple(p.strip() for p in value.split(",") if p.strip())
    return tuple(value)
