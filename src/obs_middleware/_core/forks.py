"""What a forked child must not inherit: a lock another thread of the parent may have held.

``os.fork()`` copies a lock in whatever state it was, and the thread that held it does not exist
in the child: the child's first ``with lock:`` would wait for ever. A module whose global lock is
taken on a request path renews it in the child with
``renew_after_fork(globals(), "_lock", threading.Lock)`` once, after defining it, and reads the
global at each use (never a copy bound elsewhere).
"""

from __future__ import annotations

import os
from collections.abc import Callable, MutableMapping
from typing import Any

__all__ = ["renew_after_fork"]


def renew_after_fork(
    namespace: MutableMapping[str, Any], name: str, factory: Callable[[], Any]
) -> None:
    """In every forked child, replace ``namespace[name]`` with ``factory()`` (a fresh lock)."""

    def renew() -> None:
        namespace[name] = factory()

    os.register_at_fork(after_in_child=renew)
