"""``obs dashboard``: serve the local dashboard over the SQLite store on 127.0.0.1.

Another address (``--host 0.0.0.0``) is refused unless ``--allow-remote`` is given, and then
warned about: the page serves prompts, user ids and error messages without authentication.
"""

from __future__ import annotations

import argparse
import os
import sys

from ._store import MISSING_HINT, problem

__all__ = ["run"]


def run(args: argparse.Namespace) -> int:
    """``obs dashboard``: serve until interrupted."""
    from ..dashboard import is_loopback, serve  # noqa: PLC0415 - after main's dependency check

    remote = not is_loopback(args.host)
    if remote and not args.allow_remote:
        print(
            f"obs dashboard: refusing to serve on {args.host}: the dashboard shows prompts, user "
            "ids and error messages to anyone who can reach it, with no authentication.\n"
            f"  From another machine, tunnel instead: ssh -L {args.port}:127.0.0.1:{args.port} "
            "<this host>, then open the URL there.\n"
            "  To serve the network anyway (a trusted network only): add --allow-remote.",
            file=sys.stderr,
        )
        return 2
    if remote:
        print(
            f"WARNING: obs dashboard is serving on {args.host}:{args.port} with no "
            "authentication: anyone who can reach it reads every prompt, user id and error "
            "message in the store.",
            file=sys.stderr,
        )
    if not os.path.exists(args.store):
        print(
            f"obs dashboard: no store at {args.store} yet; the page fills in when it appears "
            f"({MISSING_HINT})"
        )
    else:
        trouble = problem(args.store)
        if trouble is not None:
            print(f"obs dashboard: {trouble}", file=sys.stderr)
            return 1
    print(f"obs dashboard: http://{args.host}:{args.port}/  (store {os.path.abspath(args.store)})")
    serve(args.store, host=args.host, port=args.port, allow_remote=remote)
    return 0
