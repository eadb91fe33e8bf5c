"""Patch bookkeeping: what one integration replaced in a library, so it can be undone exactly.

Shared by every module that patches third-party code: the integrations (``integrations/``) and the
Litestar adapter (``middleware/litestar.py``). Each keeps one ``Patches`` per set of patches it
applies and undoes together; ``patch()`` is idempotent through ``bool(patches)``::

    _patches = Patches("httpx")

    def patch() -> None:
        if not _patches:
            _patches.wrap("httpx", "Client.send", _send)

    def unpatch() -> None:
        _patches.undo()

Patching happens once per process, never per call: the wrappers it installs are the library's
methods from then on.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.machinery
import importlib.util
import logging
import sys
from collections.abc import Callable
from typing import Any

import wrapt

__all__ = ["Patches", "module_exists"]

_log = logging.getLogger("obs_middleware")
_MISSING = object()


class Patches:
    """The patches of one integration, undone in reverse order by ``undo()``.

    ``wrap(module, "Class.method", wrapper)`` wraps with wrapt; a module not imported yet is
    patched by a post-import hook when it is (lazy SDK modules stay lazy); a missing target logs
    one warning and returns False. ``set(obj, attr, value)`` re-binds an attribute (a module alias
    of a patched method). ``on_undo(fn)`` runs ``fn`` at ``undo()``, for a patch made through an
    API (``logging.setLogRecordFactory``). ``bool(patches)``: anything patched or waiting for an
    import. ``targets`` and ``waiting`` say what (for tests and diagnostics).
    """

    def __init__(self, integration: str) -> None:
        self.integration = integration
        self._undo: list[Callable[[], None]] = []
        self._targets: list[tuple[Any, str]] = []
        self._hooks: list[str] = []  # modules whose import applies patches (this generation)
        self._generation = 0

    def wrap(self, module: str, path: str, wrapper: Callable[..., Any]) -> bool:
        """Wrap ``module.path`` (``"Class.method"``) with a wrapt ``wrapper``; False if absent.

        A module not imported yet is patched when it is: SDKs that load their resources lazily
        stay lazy.
        """
        if module in sys.modules:
            return self._wrap_now(module, path, wrapper)
        if not module_exists(module):
            self._missing(module, path)
            return False
        generation = self._generation

        def on_import(_module: object) -> None:
            if self._generation == generation:  # not undone since
                self._wrap_now(module, path, wrapper)

        self._hooks.append(module)
        wrapt.register_post_import_hook(on_import, module)
        return True

    def _wrap_now(self, module: str, path: str, wrapper: Callable[..., Any]) -> bool:
        owner_path, _, name = path.rpartition(".")
        try:
            owner: Any = importlib.import_module(module)
            for part in filter(None, owner_path.split(".")):
                owner = getattr(owner, part)
            getattr(owner, name)
        except (ImportError, AttributeError):
            self._missing(module, path)
            return False
        original = vars(owner).get(name, _MISSING) if hasattr(owner, "__dict__") else _MISSING
        wrapt.wrap_function_wrapper(owner, name, wrapper)
        self._replaced(owner, name, original)
        return True

    def _missing(self, module: str, path: str) -> None:
        _log.warning(
            "obs-middleware: %s: %s.%s not found, not instrumented", self.integration, module, path
        )

    def set(self, obj: Any, attr: str, value: Any) -> None:
        """Replace ``obj.attr`` (e.g. re-bind a module alias to a patched method)."""
        original = vars(obj).get(attr, _MISSING)
        setattr(obj, attr, value)
        self._replaced(obj, attr, original)

    def on_undo(self, fn: Callable[[], None]) -> None:
        """Run ``fn()`` at ``undo()``, in reverse order with the other patches."""
        self._undo.append(fn)

    def _replaced(self, owner: Any, name: str, original: Any) -> None:
        self._targets.append((owner, name))
        self._undo.append(functools.partial(_restore, owner, name, original))

    def undo(self) -> None:
        """Restore everything, last patch first; hooks of modules not imported yet lapse."""
        self._generation += 1
        self._hooks.clear()
        self._targets.clear()
        while self._undo:
            self._undo.pop()()

    @property
    def targets(self) -> tuple[tuple[Any, str], ...]:
        """``(owner, attribute)`` of every attribute replaced now, in patch order."""
        return tuple(self._targets)

    @property
    def waiting(self) -> tuple[str, ...]:
        """Modules not imported yet whose import will apply patches."""
        return tuple(dict.fromkeys(m for m in self._hooks if m not in sys.modules))

    def __bool__(self) -> bool:
        return bool(self._undo) or bool(self._hooks)


def _restore(owner: Any, name: str, original: Any) -> None:
    if original is _MISSING:
        with contextlib.suppress(AttributeError):
            delattr(owner, name)
    else:
        setattr(owner, name, original)


def module_exists(name: str) -> bool:
    """Whether module ``name`` can be imported, found without importing it or its packages."""
    parts = name.split(".")
    for i in range(len(parts) - 1, 0, -1):  # the deepest package already imported
        parent = sys.modules.get(".".join(parts[:i]))
        if parent is not None:
            search = getattr(parent, "__path__", None)
            break
    else:  # none: the top-level package, found on sys.path (find_spec imports no top-level name)
        try:
            spec = importlib.util.find_spec(parts[0])
        except (ImportError, ValueError):
            return False
        if spec is None:
            return False
        search, i = spec.submodule_search_locations, 1
    for j in range(i, len(parts)):
        if search is None:
            return False
        spec = importlib.machinery.PathFinder.find_spec(".".join(parts[: j + 1]), search)
        if spec is None:
            return False
        search = spec.submodule_search_locations
    return True
