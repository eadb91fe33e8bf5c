"""``obs check``: what ``instrument_all()`` would patch in this environment, and why not."""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import sys

import orjson

from ..integrations._registry import INTEGRATIONS, Integration, version_in_range
from ._stats import table

__all__ = ["plan", "run"]


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _row(integration: Integration) -> dict[str, str | None]:
    name, module, supported = integration.name, integration.module, integration.supported
    row: dict[str, str | None] = {"integration": name, "supported": supported or "any"}
    if integration.distribution is None:
        return row | _unbound(integration)
    version = _version(integration.distribution)
    row |= {"library": integration.distribution, "installed": version}
    if version is None or importlib.util.find_spec(module.partition(".")[0]) is None:
        return row | {"verdict": "skip: not installed"}
    if supported and not version_in_range(version, supported):
        return row | {"verdict": "skip: version outside the supported range"}
    return row | {"verdict": "patch"}


def _unbound(integration: Integration) -> dict[str, str | None]:
    """The row of an integration with no distribution: the stdlib, or protocol-level."""
    module = integration.module
    if module in sys.stdlib_module_names:
        return {"library": f"{module} (stdlib)", "installed": sys.version.split()[0],
                "verdict": "patch"}  # fmt: skip
    client = integration.client
    if client is None:
        return {"library": "-", "installed": None, "verdict": "patch"}
    distribution, client_range = client
    version = _version(distribution)
    row = {"library": distribution, "installed": version, "supported": client_range or "any"}
    if version is not None and (not client_range or version_in_range(version, client_range)):
        return row | {"verdict": "patch (client and protocol)"}
    return row | {"verdict": "patch (protocol level only)"}


def plan() -> list[dict[str, str | None]]:
    """One row per registered integration: library, installed version, range, verdict."""
    return [_row(integration) for integration in INTEGRATIONS]


def run(args: argparse.Namespace) -> int:
    """``obs check``: print the plan (``--json`` for machines)."""
    rows = plan()
    if args.json:
        print(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        return 0
    headers = ["integration", "library", "installed", "supported", "verdict"]
    print(table(headers, [[r[h] for h in headers] for r in rows], "obs check: instrument_all()"))
    patched = sum(1 for r in rows if str(r["verdict"]).startswith("patch"))
    print(f"\n{patched} of {len(rows)} integrations would be patched (libraries imported later are"
          " patched on import).")  # fmt: skip
    return 0
