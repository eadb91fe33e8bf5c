"""Records and spans of a process with every identity key set, one of them failed (the
per-exporter tests of identity and stack traces)."""

from __future__ import annotations

import obs_middleware as obs
from obs_middleware._core.span import Span
from obs_middleware._record import Record, Resource, instance_id, to_records
from obs_middleware.testing import capture

RESOURCE = Resource("svc", "prod", "2.3.4", worker_id="gpu-worker-7", machine_id="box-12")


def identity() -> dict[str, str]:
    """What every record of ``RESOURCE`` must carry."""
    return {
        "service.version": "2.3.4",
        "host.name": RESOURCE.host,
        "service.instance.id": instance_id(),
        "worker.id": "gpu-worker-7",
        "machine.id": "box-12",
    }


SECRET = "draw my cat; api_key=sk-abcdefghijklmnopqrstuvwx"


def _raise() -> None:
    raise ValueError(SECRET)


def finished() -> list[Span]:
    """One finished span and a failed child (``ValueError`` raised in ``_raise``), exported by
    nobody (a capture takes them)."""
    with capture(fixed=False), obs.span("render") as parent:
        try:
            with obs.span("step") as child:
                _raise()
        except ValueError:
            pass
    return [child, parent]


def stack_ok(text: object) -> bool:
    """True if ``text`` is the child's stack trace: its frames, no message, no source line."""
    return (
        isinstance(text, str)
        and text.endswith("in _raise")
        and "_identity.py:" in text
        and "draw my cat" not in text
        and "sk-" not in text
        and "raise ValueError" not in text
    )


def records() -> list[Record]:
    """The records of ``finished()`` for ``RESOURCE``."""
    return to_records(finished(), RESOURCE)
