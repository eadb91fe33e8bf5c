"""``obs run``'s bootstrap: its folder is put first on ``PYTHONPATH``, so every Python process of
the command imports this module at startup, before the app. It instruments the process
(``obs_middleware.cli._autorun``), then runs the ``sitecustomize`` that would have run without
``obs run`` (the next one on ``sys.path``), as ``ddtrace-run`` does. Only the standard library is
used until obs-middleware imports, and nothing raises: a failure is one line on stderr.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys


def _instrument() -> None:
    try:
        from obs_middleware.cli import _autorun  # noqa: PLC0415
    except Exception as exc:  # another interpreter, without obs-middleware: run uninstrumented
        sys.stderr.write(
            f"obs run: cannot import obs_middleware in {sys.executable} ({exc}); "
            "the app runs uninstrumented\n"
        )
        return
    _autorun.start()


def _chain() -> None:
    """Run the next ``sitecustomize`` on ``sys.path`` (as ``site`` would have), under that name."""
    here = os.path.dirname(os.path.abspath(__file__))
    path = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    try:
        spec = importlib.machinery.PathFinder.find_spec("sitecustomize", path)
        if spec is None or spec.loader is None:
            return
        module = importlib.util.module_from_spec(spec)
        sys.modules["sitecustomize"] = module
        spec.loader.exec_module(module)
    except Exception as err:  # what ``site`` prints for a failing sitecustomize
        if sys.flags.verbose:
            sys.excepthook(type(err), err, err.__traceback__)
        else:
            sys.stderr.write(
                "Error in sitecustomize; set PYTHONVERBOSE for traceback:\n"
                f"{type(err).__name__}: {err}\n"
            )


_instrument()
_chain()
