"""Test helpers: capture exported telemetry with deterministic ids and clock.

In pytest, use the ``obs_capture`` fixture (registered automatically by the ``pytest11`` entry
point). Elsewhere::

    with obs_middleware.testing.capture() as cap:
        ...
    assert cap.spans[0]["name"] == "GET /items/{id}"
"""

from ._capture import Capture, capture, deterministic

__all__ = ["Capture", "capture", "deterministic"]
