"""HTTP facts shared by the server middleware and the outbound client integrations."""

from __future__ import annotations

from typing import Any

from .redact import client_text

__all__ = [
    "OTHER_METHOD",
    "SERVED",
    "STATUS_CLASS",
    "UNTRACED",
    "content_length",
    "other_method",
]

OTHER_METHOD = "_OTHER"  # OTel's name for a method not in HttpOptions.known_methods

# The ``http.status_class`` label: ``STATUS_CLASS.get(status // 100, "xxx")`` (0: no response).
STATUS_CLASS = {1: "1xx", 2: "2xx", 3: "3xx", 4: "4xx", 5: "5xx"}

# A key an ASGI app sets in its request's scope (a WSGI app: in its environ) to leave that request
# untraced, as an excluded path is (no span, no metrics): the Prometheus ``metrics_app()`` does,
# and so does ``obs run``'s metrics route, so scrapes are not traffic.
UNTRACED = "obs.untraced"

# The key the outermost server middleware (ASGI scope, WSGI environ) sets on a request it serves:
# an inner instance of ours (``obs run`` inserted one, and the app added its own) passes the
# request through, so a request yields one server span, not two.
SERVED = "obs.served"


def content_length(value: bytes | str | None) -> int | None:
    """A ``Content-Length`` value as an int; None when absent or not a plain decimal number."""
    if value is not None and 0 < len(value) <= 18 and value.isascii() and value.isdigit():
        return int(value)
    return None


def other_method(method: str, attrs: dict[str, Any]) -> str:
    """Return ``_OTHER`` for an unknown method; its original goes to ``attrs``, bounded."""
    attrs["http.request.method_original"] = client_text(method)
    return OTHER_METHOD
