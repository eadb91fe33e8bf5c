"""Engines that exist before the patch: the usual ``db.py`` makes one at import, before
``main.py`` calls ``instrument_all()``.

SQLAlchemy keeps no registry of its engines, so they are found through the garbage collector: an
instance of a Python class refers to its class, and ``gc.get_referrers(Engine, *subclasses)``
walks the collector's objects once, in C. It runs once per ``patch()`` (``instrument_all()``), at
start-up: 12 to 30 ms measured with FastAPI, SQLAlchemy and the OpenAI SDK imported (134,000
tracked objects, a loaded 2-core machine); it grows with the heap. Nothing per statement.

Objects moved out of the collector's reach by ``gc.freeze()`` are not searched: then one warning
names ``obs.instrument_sqlalchemy(engine)``, the fix for an engine made before the freeze.
"""

from __future__ import annotations

import gc
import time
from typing import Any

from ..._core.internal import warn_once
from ._state import library, log

__all__ = ["existing_engines"]


def existing_engines() -> list[Any]:
    """Every ``Engine`` alive now (``OptionEngine`` copies included: they resolve to their base)."""
    engine_class = library().engine.Engine
    classes = _subclasses(engine_class)
    started = time.perf_counter()
    found = [o for o in gc.get_referrers(*classes) if isinstance(o, engine_class)]
    log.debug(
        "found %d engine(s) made before the patch in %.1f ms",
        len(found),
        (time.perf_counter() - started) * 1000,
    )
    if gc.get_freeze_count():
        warn_once(
            "sqlalchemy:frozen",
            "gc.freeze() hides objects from the search for engines made before instrument_all(): "
            "instrument such an engine with obs.instrument_sqlalchemy(engine)",
            logger=log,
        )
    return found


def _subclasses(cls: type) -> list[type]:
    out = [cls]
    for sub in cls.__subclasses__():
        out.extend(_subclasses(sub))
    return out
