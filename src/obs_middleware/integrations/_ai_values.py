"""What an SDK hands an AI span goes through here: prompts sanitized, usage numbers checked,
extractors run so that they never raise into the app (part of ``_ai``, split out for size)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from .._core import span as _span
from .._core.internal import internal_error
from .._core.redact import PRIVATE, scrub, truncate

__all__ = [
    "MAX_PARAMS",
    "MAX_USAGE",
    "SECRET_KEYS",
    "clean_text",
    "extractor_failed",
    "privatize",
    "safe",
    "size_pair",
    "usage_amount",
    "usage_count",
]

BASE64 = re.compile(
    r"data:[\w.+-]+/[\w.+-]+(?:;[\w.+-]+=[\w.+-]+)*;base64,[A-Za-z0-9+/=_-]*"
    r"|[A-Za-z0-9+/_-]{100,}={0,2}"
)
SECRET_KEYS = frozenset(
    {
        "api_key",
        "apikey",
        "key",
        "token",
        "api_token",
        "access_token",
        "authorization",
        "password",
        "secret",
        "webhook",
        "extra_headers",
    }
)
MAX_PARAMS = 24
# The largest usage quantity believed (tokens, images, pixels, seconds, units): beyond it a
# provider's number is garbage, and pricing it would overflow or dwarf every real cost.
MAX_USAGE = 10**12


def safe(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)``, or None if it raised (logged once per function): for extractors."""
    try:
        return fn(*args)
    except Exception:
        extractor_failed(fn)
        return None


def extractor_failed(fn: Callable[..., Any]) -> None:
    """Log, once per function, the exception ``fn`` just raised (``safe`` written inline)."""
    internal_error(getattr(fn, "__qualname__", repr(fn)), "call")


def clean_text(text: Any, limit: int) -> str:
    """Sanitize a prompt or input for export: base64 removed, secrets scrubbed, cut to ``limit``."""
    if not isinstance(text, str):
        return f"[{type(text).__name__}]"
    if len(text) < 100 and "base64," not in text:  # the usual prompt: nothing to cut out
        out = scrub(text)
        return out if len(out) <= limit else truncate(out, limit)
    if limit <= 0:
        return ""
    window = text[: limit * 2 + 512]  # bounds the work on a multi-megabyte input
    # Searched only where a match can be: a data URL, or a whitespace-free run of 100 characters
    # (the search over a whole prompt is most of this function's cost: BENCHMARKS.md, OpenAI call).
    if "base64," in window or (
        len(window) >= 100 and max(map(len, window.split()), default=0) >= 100
    ):
        window = BASE64.sub("[BASE64]", window)
    out = truncate(scrub(window), limit)
    if len(text) > limit * 2 + 512 and not out.endswith("…"):
        out += "…"
    return out


def size_pair(size: str) -> tuple[int, int] | None:
    width, sep, height = size.partition("x")
    if sep and width.isdigit() and height.isdigit():
        return int(width), int(height)
    return None


def usage_count(value: Any) -> int | None:
    """``value`` as a usage count, or None when it is not one."""
    if type(value) is int:  # what every SDK reports: one comparison
        return value if 0 <= value <= MAX_USAGE else None
    if isinstance(value, float) and value.is_integer() and 0 <= value <= MAX_USAGE:
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_USAGE:
        return int(value)
    return None


def usage_amount(value: Any) -> float | None:
    """``value`` as a usage amount (seconds, billable units), or None when it is not one."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            amount = float(value)
        except OverflowError:
            return None
        return amount if 0 <= amount <= MAX_USAGE else None  # NaN fails both comparisons
    return None


def privatize(span: _span.Span) -> None:
    """Hide the prompt, the inputs and the error message of a private call's span."""
    attrs = span.attrs
    for key, value in list(attrs.items()):
        if isinstance(value, str) and key.startswith(("ai.prompt", "ai.input.")):
            attrs[key] = PRIVATE
    attrs["ai.private"] = True
    if span.error_message:
        span.error_message = PRIVATE
