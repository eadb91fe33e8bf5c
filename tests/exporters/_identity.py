"""Records and spans of a process with every identity key set (the per-exporter identity tests)."""

from __future__ import annotations

import obs_middleware as obs
from obs_middleware._core.span import Span
from obs_middleware._record import Record, Resource, instance_id, to_records

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


def finished() -> list[Span]:
    """One finished span and one child, exported by nobody."""
    with obs.span("render") as parent, obs.span("step") as child:
        pass
    return [child, parent]


def records() -> list[Record]:
    """The records of ``finished()`` for ``RESOURCE``."""
    return to_records(finished(), RESOURCE)
