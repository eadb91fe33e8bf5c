"""``obs dashboard``: serve the local dashboard over the SQLite store on 127.0.0.1."""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys

__all__ = ["run"]


def run(args: argparse.Namespace) -> int:
    """``obs dashboard``: serve until interrupted."""
    missing = [m for m in ("starlette", "uvicorn") if importlib.util.find_spec(m) is None]
    if missing:
        print(
            f"obs dashboard needs {' and '.join(missing)}: pip install 'obs-middleware[dashboard]'",
            file=sys.stderr,
        )
        return 1
    from ..dashboard import serve  # noqa: PLC0415 - after the dependency check above

    if not os.path.exists(args.store):
        print(f"obs dashboard: no store at {args.store} yet; the page fills in when it appears")
    print(f"obs dashboard: http://{args.host}:{args.port}/  (store {os.path.abspath(args.store)})")
    serve(args.store, host=args.host, port=args.port)
    return 0
