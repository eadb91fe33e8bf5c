"""OTLP over gRPC (``[otlp-grpc]`` extra: ``grpcio``): the requests we encode, sent as they are.

The exporter writes the ``Export*ServiceRequest`` bytes itself (traces, logs; metrics through the
SDK's encoder), so each signal is one generic unary call with identity serializers on the
collector's ``Export`` method. Delivery stays ours: a call is one attempt (``wait_for_ready`` off,
so a collector that is down fails it at once with ``UNAVAILABLE`` instead of waiting out the
timeout), its status is mapped to a delivery ``Result`` (the OTLP spec's retryable codes retry;
``RESOURCE_EXHAUSTED`` for a message over the size limit bisects the batch; others are rejected),
and ``abort_all()`` cancels the calls in flight when the process stops waiting on backends.

Settings, as the SDK's gRPC exporter reads them: ``http://``/``grpc://`` endpoints are plaintext,
``https://``/``grpcs://`` TLS, a bare ``host:port`` TLS unless ``OTEL_EXPORTER_OTLP_INSECURE`` is
true; ``OTEL_EXPORTER_OTLP_[TRACES_]{HEADERS,COMPRESSION,CERTIFICATE,CLIENT_CERTIFICATE,
CLIENT_KEY}`` (headers become metadata, keys lower-cased), then the exporter's ``headers``. The
channel is made on first use, and made anew in a forked child (gRPC channels do not survive a
fork); its reconnect backoff is capped at 1 s so a collector that comes back is used promptly.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

try:
    import grpc
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "OTLP over gRPC needs grpcio: pip install 'obs-middleware[otlp-grpc]'"
    ) from exc

from .._delivery import OK, Outcome, Result

__all__ = ["GrpcChannel", "abort_all", "insecure_default"]

_METHODS = {
    "traces": "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    "metrics": "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
    "logs": "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
}
# Retryable per the OTLP specification (RESOURCE_EXHAUSTED: see ``_result``).
_RETRYABLE = frozenset(
    {
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
_COMPRESSION = {"gzip": grpc.Compression.Gzip, "deflate": grpc.Compression.Deflate}
_OPTIONS = (
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.enable_retries", 0),  # retries are the delivery layer's
    ("grpc.max_send_message_length", -1),  # the collector says if a batch is too large
)
# Every call in flight in this process: ``abort_all`` cancels them.
_inflight: weakref.WeakSet[Any] = weakref.WeakSet()
_inflight_lock = threading.Lock()


def insecure_default(environ: Mapping[str, str] = os.environ) -> bool:
    """``OTEL_EXPORTER_OTLP_[TRACES_]INSECURE``: plaintext for an endpoint without a scheme."""
    value = environ.get("OTEL_EXPORTER_OTLP_TRACES_INSECURE") or environ.get(
        "OTEL_EXPORTER_OTLP_INSECURE", ""
    )
    return value.strip().lower() == "true"


def _env(environ: Mapping[str, str], name: str) -> str:
    return environ.get(f"OTEL_EXPORTER_OTLP_TRACES_{name}") or environ.get(
        f"OTEL_EXPORTER_OTLP_{name}", ""
    )


def _read(path: str) -> bytes | None:
    if not path:
        return None
    with open(path, "rb") as f:
        return f.read()


class GrpcChannel:
    """One collector's gRPC channel: ``call(signal, body, timeout)`` → a delivery ``Result``.

    ``endpoint``: ``scheme://host[:port]`` or ``host[:port]`` (port 4317 by default).
    Raises ``ValueError`` for an endpoint without a host, ``OSError`` for an unreadable
    certificate file.
    """

    def __init__(
        self,
        endpoint: str,
        headers: Mapping[str, str],
        environ: Mapping[str, str] = os.environ,
    ) -> None:
        parts = urlsplit(endpoint if "://" in endpoint else f"//{endpoint}")
        if not parts.hostname:
            raise ValueError(f"OTLP gRPC endpoint without a host: {endpoint!r}")
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        self.target = f"{host}:{parts.port or 4317}"
        scheme = parts.scheme.lower()
        self.secure = scheme in ("https", "grpcs") or (not scheme and not insecure_default(environ))
        metadata: dict[str, str] = {}
        if _env(environ, "HEADERS"):
            from opentelemetry.util.re import parse_env_headers  # noqa: PLC0415 - rarely set

            try:
                metadata.update(parse_env_headers(_env(environ, "HEADERS"), liberal=True))
            except TypeError:  # SDKs before ``liberal``
                metadata.update(parse_env_headers(_env(environ, "HEADERS")))
        metadata.update(headers)
        self.metadata = tuple((k.lower(), v) for k, v in metadata.items())
        self.compression = _COMPRESSION.get(_env(environ, "COMPRESSION").strip().lower())
        self._credentials = (
            grpc.ssl_channel_credentials(
                _read(_env(environ, "CERTIFICATE")),
                _read(_env(environ, "CLIENT_KEY")),
                _read(_env(environ, "CLIENT_CERTIFICATE")),
            )
            if self.secure
            else None
        )
        self._channel: grpc.Channel | None = None
        self._forked: list[grpc.Channel] = []
        self._calls: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _callable(self, signal: str) -> Any:
        call = self._calls.get(signal)
        if call is None:
            with self._lock:
                if self._channel is None:
                    if self._credentials is not None:
                        self._channel = grpc.secure_channel(
                            self.target, self._credentials, options=_OPTIONS
                        )
                    else:
                        self._channel = grpc.insecure_channel(self.target, options=_OPTIONS)
                # No serializers: the request is our bytes, the response's bytes are ignored.
                call = self._calls[signal] = self._channel.unary_unary(_METHODS[signal])
        return call

    def call(self, signal: str, body: bytes, timeout: float) -> Result:
        """Send one ``Export`` request of ``signal`` (traces, metrics, logs); one attempt."""
        future = self._callable(signal).future(
            body,
            timeout=max(timeout, 0.001),
            metadata=self.metadata,
            compression=self.compression,
            wait_for_ready=False,
        )
        with _inflight_lock:
            _inflight.add(future)
        try:
            future.result()
        except grpc.FutureCancelledError:
            return Result(Outcome.RETRY, None, "OTLP gRPC call cancelled (shutdown)")
        except grpc.RpcError as exc:
            return _result(exc)
        finally:
            with _inflight_lock:
                _inflight.discard(future)
        return OK

    def close(self) -> None:
        """Close the channel (a later call opens a new one)."""
        with self._lock:
            channel, self._channel = self._channel, None
            self._calls = {}
        if channel is not None:
            channel.close()

    def after_fork(self) -> None:
        """In a forked child: leave the parent's channel unused (a new one on the next call)."""
        if self._channel is not None:  # kept, never closed nor collected here: not the child's
            self._forked.append(self._channel)
        self._channel = None
        self._calls = {}
        self._lock = threading.Lock()


def _result(exc: grpc.RpcError) -> Result:
    code = exc.code() if hasattr(exc, "code") else None
    details = (exc.details() if hasattr(exc, "details") else None) or ""
    name = code.name if code is not None else "UNKNOWN"
    detail = f"OTLP gRPC {name}: {details}"[:300]
    if code in _RETRYABLE:
        return Result(Outcome.RETRY, None, detail)
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        if "larger than max" in details.lower():
            return Result(Outcome.TOO_LARGE, None, detail)
        return Result(Outcome.RETRY, None, detail)  # throttled: back off
    return Result(Outcome.REJECTED, None, detail)


def abort_all() -> None:
    """Cancel every OTLP gRPC call in flight in this process (from another thread)."""
    with _inflight_lock:
        futures = list(_inflight)
    for future in futures:
        future.cancel()


def _after_fork_in_child() -> None:
    global _inflight_lock
    _inflight_lock = threading.Lock()
    _inflight.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)
