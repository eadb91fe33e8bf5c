"""Redaction: the one place privacy rules live, applied before anything is queued for export."""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["PRIVATE", "SENSITIVE_HEADERS", "compile_secret_patterns", "scrub", "truncate"]

PRIVATE = "[PRIVATE]"
REDACTED = "[REDACTED]"

# Never exported unless the user opts in explicitly (HttpOptions.allow_sensitive_headers).
SENSITIVE_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "x-api-key",
        "api-key",
        "x-auth-token",
        "x-csrf-token",
        "x-forwarded-for",
        "x-real-ip",
        "forwarded",
        "cf-connecting-ip",
        "true-client-ip",
    }
)

_SECRET_PATTERNS = (
    r"(?i:\bbearer)\s+[A-Za-z0-9._~+/=-]{8,}",
    r"(?i:\bbasic)\s+[A-Za-z0-9+/=]{8,}",
    r"sk-[A-Za-z0-9_-]{16,}",  # OpenAI (no word boundary: a key glued to text still goes)
    r"r8_[A-Za-z0-9]{20,}",  # Replicate
    r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",  # JWT
    r"\b(?:ak|as)-[A-Za-z0-9]{16,}",  # Modal token id/secret
    r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}:[0-9a-f]{32}\b",  # fal key
    r"(?i:\b(?:api[_-]?key|token|secret|password|passwd))\s*[=:]\s*[^\s&,;]{4,}",
)

_compiled = re.compile("|".join(_SECRET_PATTERNS))


def compile_secret_patterns(extra: Iterable[str] = ()) -> None:
    """Install the secret patterns plus the user's ``extra`` ones (called by ``configure``)."""
    global _compiled
    _compiled = re.compile("|".join((*_SECRET_PATTERNS, *extra)))


def scrub(text: str) -> str:
    """Replace API keys, bearer tokens, JWTs and ``key=value`` secrets with ``[REDACTED]``."""
    return _compiled.sub(REDACTED, text)


def truncate(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters with an ellipsis marker (``limit=0`` → empty)."""
    if limit <= 0:
        return ""
    return text if len(text) <= limit else text[:limit] + "…"
