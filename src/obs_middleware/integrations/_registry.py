"""The integration registry: supported version ranges, post-import hooks, patch/unpatch bookkeeping.

``INTEGRATIONS`` is the one place each integration's supported range is written: one row per
library, naming the library module whose import triggers the patch, its distribution, the range,
and our module that patches it (``home``). ``instrument_all()`` patches what is imported,
registers a post-import hook for what is installed but not yet imported (the integration's module
is imported only then, so its SDK is never imported here), skips versions outside the range with
one warning, and returns a report. A failing patch is reported, never raised into the app.

Every integration module has the same shape (checked by tests/integrations/test_conformance.py):

- ``patch()``: idempotent (a ``Patches`` from ``_core/patches.py`` holds what it replaced);
  targets looked up defensively (missing: one warning, skipped); a library module not imported
  yet is patched by a post-import hook when it is.
- ``unpatch()``: undoes exactly that, idempotent; ``patch()`` works again afterwards.
- ``supported``: the row's requirement (``"sqlalchemy>=2.0,<2.2"``), read from here with
  ``lookup(name).requirement``, never written in the module. (The Litestar adapter lives in
  ``middleware/``, which never imports the integrations: its row is its only range.)
- ``__all__`` lists ``patch``, ``unpatch`` and ``supported``, plus any public extras.

A new integration: a row here, a module with that shape, a compatibility suite under the top-level
``integrations/<name>/``.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import logging
import re
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

import wrapt

from .._core.forks import renew_after_fork

__all__ = [
    "INTEGRATIONS",
    "Integration",
    "Outcome",
    "Report",
    "instrument_all",
    "lookup",
    "uninstrument_all",
    "version_in_range",
]

_log = logging.getLogger("obs_middleware")
Status = Literal["patched", "pending", "skipped", "failed", "already"]


@dataclass(frozen=True)
class Integration:
    """One library we patch, and where our ``patch()``/``unpatch()`` for it live."""

    name: str
    module: str  # the library module whose import triggers the patch
    distribution: str | None  # PyPI distribution for the version check; None for the stdlib
    supported: str  # version range, e.g. ">=2.0,<2.2" ("" = any)
    home: str = ""  # our module; "" = obs_middleware.integrations.<name>
    # A protocol-level integration (no distribution of its own): the (distribution, range) of the
    # client library it also patches when that is in range.
    client: tuple[str, str] | None = None

    def __post_init__(self) -> None:
        if not self.home:
            object.__setattr__(self, "home", f"obs_middleware.integrations.{self.name}")

    @property
    def requirement(self) -> str:
        """``"sqlalchemy>=2.0,<2.2"``; the client's for a protocol-level one; "" for the stdlib."""
        if self.client is not None:
            return "".join(self.client)
        return f"{self.distribution}{self.supported}" if self.distribution else ""


@dataclass(frozen=True)
class Outcome:
    """What ``instrument_all()`` did for one integration, and why."""

    name: str
    status: Status
    version: str | None
    supported: str
    reason: str = ""


class Report(tuple[Outcome, ...]):
    """The outcomes of ``instrument_all()``; ``str(report)`` is a readable table."""

    @property
    def patched(self) -> list[str]:
        """Names patched now or already patched."""
        return [o.name for o in self if o.status in ("patched", "already")]

    def __str__(self) -> str:
        rows = [
            f"{o.name:<12} {o.status:<8} {o.version or '-':<10} "
            f"{o.supported or 'any':<14} {o.reason}"
            for o in self
        ]
        return "\n".join(rows)


# Filled as integration modules land; the order is the patch order.
INTEGRATIONS: tuple[Integration, ...] = (
    Integration("logging", "logging", None, ""),
    # Triggered by opentelemetry.trace: by then the context API it wraps is fully imported.
    Integration("opentelemetry", "opentelemetry.trace", "opentelemetry-api", ">=1.20,<2"),
    Integration("sqlalchemy", "sqlalchemy", "sqlalchemy", ">=2.0,<2.2"),
    Integration("httpx", "httpx", "httpx", ">=0.24,<1"),
    Integration("requests", "requests", "requests", ">=2.28,<3"),
    # Like the Litestar plugin, this moves the ASGI middleware: it lives with the middleware.
    Integration(
        "starlette", "starlette", "starlette", ">=0.37,<2", "obs_middleware.middleware.starlette"
    ),
    # The Litestar plugin is the ASGI middleware fitted to Litestar: it lives with the middleware.
    Integration(
        "litestar", "litestar", "litestar", ">=2.8,<3", "obs_middleware.middleware.litestar"
    ),
    Integration("openai", "openai", "openai", ">=1.40,<4"),
    Integration("replicate", "replicate", "replicate", ">=1.0,<2"),
    Integration("fal", "fal_client", "fal-client", ">=1.0,<2"),
    Integration("modal", "modal", "modal", ">=1.0,<2"),
    # Protocol-level (any ComfyUI client over requests/httpx/aiohttp/websockets): patched at once;
    # it hooks each transport's import itself and gates comfy-api-simplified's range inside.
    Integration("comfyui", "obs_middleware", None, "", client=("comfy-api-simplified", ">=1.5,<2")),
    Integration("a1111", "webuiapi", "webuiapi", ">=0.9,<0.10"),
)


def lookup(name: str) -> Integration:
    """Return the row of the integration ``name`` (KeyError if none)."""
    for integration in INTEGRATIONS:
        if integration.name == name:
            return integration
    raise KeyError(name)


_lock = threading.RLock()
renew_after_fork(globals(), "_lock", threading.RLock)
_patched: set[str] = set()
_hooked: set[str] = set()
_enabled: set[str] = set()


def _release(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split("."):
        m = re.match(r"\d+", piece)
        if m is None:
            break
        parts.append(int(m.group()))
        if m.end() != len(piece):  # "0rc1", "1.dev0": stop at the pre-release marker
            break
    return tuple(parts)


def version_in_range(version: str, spec: str) -> bool:
    """True if ``version`` meets every clause of ``spec`` (``>=X``, ``<Y``, ``==Z``, ``!=W``)."""
    have = _release(version)
    for clause in filter(None, (c.strip() for c in spec.split(","))):
        m = re.fullmatch(r"(>=|<=|==|!=|>|<)\s*([\w.]+)", clause)
        if m is None:
            raise ValueError(f"unsupported version clause {clause!r}")
        op, want_s = m.groups()
        want = _release(want_s)
        width = max(len(have), len(want))
        a, b = have + (0,) * (width - len(have)), want + (0,) * (width - len(want))
        ok = {
            ">=": a >= b,
            "<=": a <= b,
            "==": a == b,
            "!=": a != b,
            ">": a > b,
            "<": a < b,
        }[op]
        if not ok:
            return False
    return True


def _version(integration: Integration) -> str | None:
    if integration.distribution is None:
        return sys.version.split()[0]
    try:
        return importlib.metadata.version(integration.distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _module_of(integration: Integration) -> object:
    return importlib.import_module(integration.home)


def _patch(integration: Integration) -> Outcome:
    version = _version(integration)
    spec = integration.supported
    with _lock:
        if integration.name in _patched:
            return Outcome(integration.name, "already", version, spec)
        if version is not None and spec and not version_in_range(version, spec):
            reason = f"{integration.distribution} {version} is outside the supported range {spec}"
            _log.warning("obs-middleware: not instrumenting %s: %s", integration.name, reason)
            return Outcome(integration.name, "skipped", version, spec, reason)
        try:
            _module_of(integration).patch()  # type: ignore[attr-defined]
        except Exception as exc:
            _log.warning("obs-middleware: patching %s failed", integration.name, exc_info=True)
            return Outcome(
                integration.name, "failed", version, spec, f"{type(exc).__name__}: {exc}"
            )
        _patched.add(integration.name)
        return Outcome(integration.name, "patched", version, spec)


def _on_import(integration: Integration) -> Callable[[object], None]:
    def hook(_module: object) -> None:
        if integration.name in _enabled:
            _patch(integration)

    return hook


def instrument_all(only: Iterable[str] | None = None, exclude: Iterable[str] = ()) -> Report:
    """Patch every supported library that is installed; later imports are patched on import.

    ``only`` restricts to the named integrations; ``exclude`` leaves some out. Idempotent.
    """
    wanted = set(only) if only is not None else None
    skip = set(exclude)
    outcomes: list[Outcome] = []
    for integration in INTEGRATIONS:
        if (wanted is not None and integration.name not in wanted) or integration.name in skip:
            continue
        with _lock:
            _enabled.add(integration.name)
        if integration.module in sys.modules:
            outcomes.append(_patch(integration))
        elif importlib.util.find_spec(integration.module.partition(".")[0]) is None:
            outcomes.append(
                Outcome(integration.name, "skipped", None, integration.supported, "not installed")
            )
        else:
            with _lock:
                if integration.name not in _hooked:
                    _hooked.add(integration.name)
                    wrapt.register_post_import_hook(_on_import(integration), integration.module)
            outcomes.append(
                Outcome(
                    integration.name,
                    "pending",
                    _version(integration),
                    integration.supported,
                    "patched when first imported",
                )
            )
    return Report(outcomes)


def uninstrument_all() -> list[str]:
    """Undo every patch; pending import hooks are disarmed. Returns the names unpatched."""
    undone: list[str] = []
    with _lock:
        _enabled.clear()
        for integration in reversed(INTEGRATIONS):
            if integration.name in _patched:
                try:
                    _module_of(integration).unpatch()  # type: ignore[attr-defined]
                except Exception:
                    _log.warning("obs-middleware: unpatching %s failed", integration.name)
                    continue
                _patched.discard(integration.name)
                undone.append(integration.name)
    return undone
