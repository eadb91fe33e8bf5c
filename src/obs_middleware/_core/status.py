"""Span statuses: which are a failure of the service, which are the caller's own doing.

``ok`` and ``cancelled`` are no failure. ``invalid_input`` (a request the provider or the app
rejected as malformed) and ``content_violation`` (a prompt or an output refused or flagged by a
content-safety check) are outcomes the user caused: they are counted apart (the ``ai.user_errors``
metric, the report's ``user_errors``) and never fire the failure alert. Every other status
(``error``, ``timeout``, a provider's own) is a service failure. The Prometheus alert rules, the
Tinybird/ClickHouse ``error_rate`` pipe and ``obs report`` all read statuses this way.
"""

from __future__ import annotations

__all__ = ["NOT_FAILURES", "USER_ERRORS", "is_service_failure"]

USER_ERRORS = frozenset({"invalid_input", "content_violation"})
NOT_FAILURES = frozenset({"ok", "cancelled"})


def is_service_failure(status: str) -> bool:
    """True when ``status`` is a failure of the service (not ok, cancelled or a user error)."""
    return status not in NOT_FAILURES and status not in USER_ERRORS
