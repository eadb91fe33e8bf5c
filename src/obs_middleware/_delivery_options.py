"""What a delivery is told and how it judges an answer: options (from code or ``OBS_*``
variables), the outcome of one request, the circuit breaker, and the spool's default place.
``_delivery.Delivery`` acts on them."""

from __future__ import annotations

import enum
import hashlib
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from ._spool import SPOOL_SUPPORTED

__all__ = [
    "AUTO_SPOOL",
    "OK",
    "Breaker",
    "DeliveryOptions",
    "Outcome",
    "Result",
    "auto_spool_dir",
    "classify_status",
    "default_spool_root",
]


AUTO_SPOOL = "auto"  # ``DeliveryOptions.spool_dir``: the default place, see ``default_spool_root``
_SPOOL_OFF = frozenset({"off", "none", "0", "false", "no"})


def default_spool_root(environ: Mapping[str, str] = os.environ) -> str | None:
    """Where spools go by default: ``$XDG_STATE_HOME/obs-middleware/spool`` (else
    ``~/.local/state/...``), or, if that cannot be written, ``obs-middleware-<uid>/spool`` in the
    temp directory; None if neither is usable (the spool is then off, with one warning).

    A folder is used only if it is a directory owned by this user (a shared temp directory
    must not let another user plant batches we would replay); it is created with mode 0700.
    """
    state = environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    uid = os.getuid() if hasattr(os, "getuid") else 0
    candidates = [os.path.join(state, "obs-middleware", "spool")]
    candidates.append(os.path.join(tempfile.gettempdir(), f"obs-middleware-{uid}", "spool"))
    for path in candidates:
        if not os.path.isabs(path):
            continue  # "~" without a home
        try:
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)  # the mode: leaf only
            os.makedirs(path, mode=0o700, exist_ok=True)
            info = os.stat(os.path.dirname(path))
            if info.st_uid == uid and os.access(path, os.W_OK | os.X_OK):
                return path
        except OSError:
            continue
    return None


def auto_spool_dir(name: str, destination: str) -> str | None:
    """The default spool folder of exporter ``name`` sending to ``destination`` (None: off)."""
    root = default_spool_root()
    if root is None:
        return None
    # The destination (URL, datasource, credentials) is hashed into the folder name: processes
    # exporting to the same place share a spool and replay each other's batches there; another
    # destination (another workspace's token) never receives them. No secret is written out.
    digest = hashlib.sha256(destination.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return os.path.join(root, f"{name}-{digest}")


class Outcome(enum.Enum):
    """How one request went."""

    OK = "ok"
    RETRY = "retry"  # transient: 429, 5xx, connection error, timeout
    TOO_LARGE = "too_large"  # 413 or over the exporter's limit: bisect
    REJECTED = "rejected"  # any other 4xx: retrying cannot help


@dataclass(frozen=True)
class Result:
    """The outcome of one request, with the server's ``Retry-After`` (s) when it gave one."""

    outcome: Outcome
    retry_after: float | None = None
    detail: str = ""


OK = Result(Outcome.OK)


def classify_status(status: int, retry_after: str | None = None, detail: str = "") -> Result:
    """Map an HTTP status (and its ``Retry-After`` header) to a ``Result``."""
    if 200 <= status < 300:
        return OK
    if status == 413:
        return Result(Outcome.TOO_LARGE, None, detail)
    if status in (408, 425, 429) or status >= 500:
        after: float | None = None
        if retry_after:
            try:
                after = max(float(retry_after), 0.0)
            except ValueError:
                after = None  # an HTTP-date: fall back to our own backoff
        return Result(Outcome.RETRY, after, detail or f"HTTP {status}")
    return Result(Outcome.REJECTED, None, detail or f"HTTP {status}")


@dataclass(frozen=True)
class DeliveryOptions:
    """How a network exporter delivers.

    ``timeout_s``: limit for one request (connect, send, each read).
    ``max_attempts``/``retry_budget_s``: tries per batch, and the time they may take in all.
    ``backoff_s``/``backoff_max_s``: first retry delay (doubled each time, full jitter) and cap.
    ``breaker_failures``/``breaker_cooldown_s``: consecutive failures that open the circuit, and
    how long it stays open before one probe request is let through.
    ``spool_dir``: keep undeliverable batches on disk there; ``AUTO_SPOOL`` (the default): a
    folder per exporter and destination under ``default_spool_root()``; None: no spool, such
    batches are dropped (counted).
    ``spool_max_bytes``: spool size cap across every process sharing the directory.
    ``spool_fsync_s``: fsync the spool at most this often (and always when closing a segment).
    ``flush_budget_s``: time ``flush()`` may spend replaying the spool.
    """

    timeout_s: float = 5.0
    max_attempts: int = 3
    retry_budget_s: float = 5.0
    backoff_s: float = 0.1
    backoff_max_s: float = 2.0
    breaker_failures: int = 5
    breaker_cooldown_s: float = 5.0
    spool_dir: str | None = AUTO_SPOOL
    spool_max_bytes: int = 256 * 1024 * 1024
    spool_fsync_s: float = 1.0
    flush_budget_s: float = 5.0

    @classmethod
    def from_env(cls, exporter: str, environ: Mapping[str, str] = os.environ) -> DeliveryOptions:
        """Read ``OBS_EXPORT_TIMEOUT_S``, ``OBS_SPOOL_DIR`` and ``OBS_SPOOL_MAX_BYTES``.

        Each exporter spools in its own subfolder of ``OBS_SPOOL_DIR``; unset, the spool is in
        the default place (``AUTO_SPOOL``); ``off`` switches it off. The rest are defaults.
        """
        options = cls()
        spool = environ.get("OBS_SPOOL_DIR", "").strip()
        if spool.lower() in _SPOOL_OFF:
            options = replace(options, spool_dir=None)
        elif spool:
            options = replace(options, spool_dir=os.path.join(spool, exporter))
        for var, convert in (("OBS_EXPORT_TIMEOUT_S", float), ("OBS_SPOOL_MAX_BYTES", int)):
            raw = environ.get(var)
            if not raw:
                continue
            try:
                value = convert(raw)
                if var == "OBS_SPOOL_MAX_BYTES":
                    options = replace(options, spool_max_bytes=int(value))
                else:
                    options = replace(options, timeout_s=value, retry_budget_s=value)
            except ValueError as exc:  # a typo in a deployment must not take the app down
                warnings.warn(f"obs-middleware: ignoring {var}={raw!r}: {exc}", stacklevel=2)
        return options

    def __post_init__(self) -> None:
        if self.timeout_s <= 0 or self.retry_budget_s < 0 or self.breaker_cooldown_s < 0:
            raise ValueError("delivery: timeouts and budgets must be positive")
        if self.max_attempts < 1 or self.breaker_failures < 1:
            raise ValueError("delivery: max_attempts and breaker_failures must be >= 1")
        if self.spool_dir not in (None, AUTO_SPOOL) and not SPOOL_SUPPORTED:  # pragma: no cover
            raise ValueError("delivery: the disk spool needs POSIX file locks")


class Breaker:
    """Circuit breaker: closed → open after N consecutive failures → half-open probe → closed."""

    CLOSED, HALF_OPEN, OPEN = 0, 1, 2

    def __init__(
        self,
        failures: int,
        cooldown_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = failures
        self.cooldown_s = cooldown_s
        self.clock = clock
        self.state = self.CLOSED
        self.failures = 0
        self.opened_at = 0.0
        self.not_before = 0.0  # a server's Retry-After holds every request until then

    def allow(self) -> bool:
        """Tell whether a request may go out now (in half-open state, only the one probe)."""
        now = self.clock()
        if now < self.not_before:
            return False
        if self.state == self.OPEN:
            if now - self.opened_at < self.cooldown_s:
                return False
            self.state = self.HALF_OPEN
        return True

    def success(self) -> None:
        """Record that the last request got through."""
        self.failures = 0
        self.state = self.CLOSED

    def failure(self, retry_after: float | None = None) -> None:
        """Record that the last request failed transiently."""
        now = self.clock()
        if retry_after:
            self.not_before = max(self.not_before, now + retry_after)
        self.failures += 1
        if self.state == self.HALF_OPEN or self.failures >= self.threshold:
            self.opened_at = now
            self.state = self.OPEN
