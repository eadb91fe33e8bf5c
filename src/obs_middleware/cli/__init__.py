"""The ``obs`` command: ``demo``, ``report``, ``dashboard``, ``check``, ``assets``, ``run``.

The parser lives here; each subcommand's module (imported only when it runs, so ``obs --help``
stays instant) has ``run(args) -> exit code``. A command whose libraries are not installed says
which extra brings them instead of failing on an import.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Sequence

from .._version import __version__
from ..exporters.sqlite import default_path
from .assets import add_parser as _assets_parser

__all__ = ["main"]

_STORE_HELP = "SQLite store path (default: $OBS_STORE or obs.db)"

# command -> (the modules it imports beyond the core, the extra that installs them)
_NEEDS: dict[str, tuple[tuple[str, ...], str]] = {
    "demo": (("starlette", "litestar", "sqlalchemy"), "demo"),
    "dashboard": (("starlette", "uvicorn"), "dashboard"),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="obs", description="obs-middleware: demo, report, dashboard, check, assets, run."
    )
    parser.add_argument("--version", action="version", version=f"obs-middleware {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="run an instrumented demo service and print a report")
    demo.add_argument("--requests", type=int, default=3000, help="requests to drive (3000)")
    demo.add_argument("--store", default=default_path(), help=_STORE_HELP)
    demo.add_argument("--jsonl", default="obs-demo.jsonl", help="JSON lines copy of the records")
    demo.add_argument("--seed", type=int, default=7, help="random seed for the request mix")

    report = sub.add_parser("report", help="print tables from the SQLite store")
    _store_options(report)
    report.add_argument("--json", action="store_true", help="print the figures as JSON")

    dashboard = sub.add_parser("dashboard", help="serve the local dashboard on 127.0.0.1")
    dashboard.add_argument("--store", default=default_path(), help=_STORE_HELP)
    dashboard.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    dashboard.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    dashboard.add_argument(
        "--allow-remote",
        action="store_true",
        help="let --host be an address beyond loopback (serves prompts and user ids to the "
        "network, unauthenticated)",
    )

    check = sub.add_parser("check", help="show what instrument_all() would patch here")
    check.add_argument("--json", action="store_true", help="print the plan as JSON")

    _assets_parser(sub)

    run = sub.add_parser(
        "run",
        help="run a Python server instrumented, no code change: obs run -- uvicorn app:app",
        usage="obs run [-h] -- COMMAND [ARG ...]",
        description="Run COMMAND with every Python process of it instrumented (OBS_* variables "
        "configure it); Starlette, FastAPI, Litestar and Flask apps get the HTTP middleware, "
        "and OBS_METRICS_PATH (default /metrics) serves the metrics of every worker.",
    )
    run.add_argument(
        "argv", nargs=argparse.REMAINDER, metavar="COMMAND", help="the command and its arguments"
    )
    return parser


def _store_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", default=default_path(), help=_STORE_HELP)
    p.add_argument("--service", help="only this service")
    p.add_argument("--since", help="only the last 30s, 15m, 2h, 7d…")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``obs`` command line; returns the process exit code."""
    args = _parser().parse_args(argv)
    missing = _missing(args.command)
    if missing:
        extra = _NEEDS[args.command][1]
        print(
            f"obs {args.command} needs {' and '.join(missing)}, not installed here: "
            f"pip install 'obs-middleware[{extra}]'",
            file=sys.stderr,
        )
        return 1
    module = importlib.import_module(f"{__name__}.{args.command}")
    try:
        code: int = module.run(args)
    except KeyboardInterrupt:
        return 130
    return code


def _missing(command: str) -> list[str]:
    modules, _ = _NEEDS.get(command, ((), ""))
    return [m for m in modules if importlib.util.find_spec(m) is None]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
