"""What the SQLAlchemy instrumentation keeps per engine, and what its other modules share."""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..._core import internal
from ..._core.metrics import Balance, Histogram, Series, dropped
from .._sql import analyze

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

__all__ = [
    "DEFAULT_SLOW_MS",
    "DIALECT_METHODS",
    "EngineState",
    "Entry",
    "internal_error",
    "library",
    "lock",
    "log",
    "states",
]

log = logging.getLogger("obs_middleware.sqlalchemy")
MAX_STATEMENTS = 1024  # distinct statement texts remembered per engine
DEFAULT_SLOW_MS = 100.0
DIALECT_METHODS = ("do_execute", "do_execute_no_params", "do_executemany")

lock = threading.RLock()
states: weakref.WeakKeyDictionary[Engine, EngineState] = weakref.WeakKeyDictionary()
_made: weakref.WeakSet[EngineState] = weakref.WeakSet()  # every state, for their locks at fork

# Per distinct statement text: (span attributes to copy, metric labels, may take a comment, the
# duration histogram's series of those labels).
Entry = tuple[dict[str, Any], tuple[str, str], bool, Series]


class EngineState:
    """What one instrumented engine needs on the hot path and at snapshot time."""

    __slots__ = (
        "__weakref__",
        "attrs",
        "auto",
        "backslash",
        "checked_out",
        "commenter",
        "engine",
        "labels",
        "listeners",
        "lock",
        "opened",
        "pool_name",
        "slow_ms",
        "slow_ns",
        "statements",
    )

    def __init__(self, engine: Engine, pool_name: str, auto: bool) -> None:
        self.engine = weakref.ref(engine)
        self.pool_name = pool_name
        self.labels = (pool_name,)
        self.auto = auto
        dialect = engine.dialect
        self.attrs: dict[str, Any] = {
            "db.system": dialect.name,
            "db.driver": dialect.driver,
            "db.pool.name": pool_name,
        }
        if engine.url.database:
            self.attrs["db.name"] = engine.url.database
        self.backslash = dialect.name in ("mysql", "mariadb")
        self.statements: dict[str, Entry] = {}
        self.lock = threading.Lock()
        self.opened = 0  # connect events minus close events
        self.checked_out = Balance()  # checkout minus checkin events (pools without counters)
        self.slow_ms = DEFAULT_SLOW_MS
        self.slow_ns = 0
        self.commenter = False
        self.listeners: list[tuple[str, Callable[..., Any]]] = []  # pool events we listen to
        _made.add(self)

    def entry(self, statement: str, duration: Histogram) -> Entry:
        """Analyze a statement seen for the first time (then served from ``statements``)."""
        found = analyze(statement, backslash_escapes=self.backslash)
        attrs = dict(self.attrs)
        attrs["db.operation"] = found.operation
        if found.tables is not None:
            attrs["db.table"] = found.tables
        attrs["db.statement"] = found.statement
        labels = (found.operation, self.pool_name)
        entry = (attrs, labels, not found.has_comment, duration.series(labels))
        with self.lock:
            statements = self.statements
            if len(statements) >= MAX_STATEMENTS:
                del statements[next(iter(statements))]  # oldest first
            statements[statement] = entry
        return entry


def _after_fork_in_child() -> None:
    # The parent's locks may be held by threads the child lacks: the module's (an engine being
    # instrumented) and each engine's (a statement seen first, a pool connect or checkout).
    global lock
    lock = threading.RLock()
    for state in list(_made):
        state.lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def library() -> Any:
    """Import ``sqlalchemy`` once the app uses it (``import obs_middleware`` never does)."""
    import sqlalchemy  # noqa: PLC0415

    return sqlalchemy


def internal_error(where: str) -> None:
    """Our own failure: counted as a drop, logged once per place; the query goes on untouched."""
    dropped.add(("internal_error",))
    internal.internal_error(where, "query", logger=log)
