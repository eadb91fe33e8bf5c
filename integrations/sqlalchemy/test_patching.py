"""Patch-ordering matrix (dd-trace ``PatchTestCase`` style): each permutation in a fresh process.

Every scenario prints one JSON object of observations; "spans" counts the ``db.query`` spans one
``SELECT 1`` produced, so 1 means instrumented exactly once and 0 means not instrumented.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

import pytest

PRELUDE = """
import asyncio, json
import wrapt
import obs_middleware as obs
from obs_middleware.integrations import sqlalchemy as integration
from obs_middleware.testing import capture

def spans(engine):
    import sqlalchemy as sa
    with capture() as cap:
        with obs.span("request"), engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return len([s for s in cap.spans if s["name"] == "db.query"])

def async_spans(engine):
    import sqlalchemy as sa
    async def run():
        with obs.span("job"):
            async with engine.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))
        await engine.dispose()
    with capture() as cap:
        asyncio.run(run())
        return len([s for s in cap.spans if s["name"] == "db.query"])

def wraps():
    from sqlalchemy.engine import Engine
    init, depth = Engine.__dict__["__init__"], 0
    while isinstance(init, wrapt.FunctionWrapper):
        init, depth = init.__wrapped__, depth + 1
    return depth

def statuses(report):
    return [o.status for o in report]
"""

SCENARIOS: dict[str, tuple[str, dict[str, Any]]] = {
    "import then patch": (
        """
        import sqlalchemy as sa
        from sqlalchemy import create_engine  # taken before the patch: still covered
        from sqlalchemy.ext.asyncio import create_async_engine
        out = {"report": statuses(obs.instrument_all(only=["sqlalchemy"])), "wraps": wraps()}
        out["spans"] = spans(create_engine("sqlite://"))
        out["async"] = async_spans(create_async_engine("sqlite+aiosqlite://"))
        """,
        {"report": ["patched"], "wraps": 1, "spans": 1, "async": 1},
    ),
    "patch then import": (
        """
        out = {"report": statuses(obs.instrument_all(only=["sqlalchemy"]))}
        import sqlalchemy as sa  # the post-import hook patches here
        from sqlalchemy.ext.asyncio import create_async_engine
        out["wraps"] = wraps()
        out["spans"] = spans(sa.create_engine("sqlite://"))
        out["async"] = async_spans(create_async_engine("sqlite+aiosqlite://"))
        """,
        {"report": ["pending"], "wraps": 1, "spans": 1, "async": 1},
    ),
    "patch twice": (
        """
        import sqlalchemy as sa
        first = statuses(obs.instrument_all(only=["sqlalchemy"]))
        second = statuses(obs.instrument_all(only=["sqlalchemy"]))
        integration.patch()
        engine = sa.create_engine("sqlite://")
        obs.instrument_sqlalchemy(engine)
        out = {"report": first + second, "wraps": wraps(), "spans": spans(engine)}
        """,
        {"report": ["patched", "already"], "wraps": 1, "spans": 1},
    ),
    "patch, unpatch, patch": (
        """
        import sqlalchemy as sa
        obs.instrument_all(only=["sqlalchemy"])
        early = sa.create_engine("sqlite://")
        out = {"undone": obs.uninstrument_all(), "wraps_after_unpatch": wraps()}
        out["spans_after_unpatch"] = spans(early) + spans(sa.create_engine("sqlite://"))
        out["report"] = statuses(obs.instrument_all(only=["sqlalchemy"]))
        out["wraps"] = wraps()
        out["spans"] = spans(sa.create_engine("sqlite://"))
        """,
        {
            "undone": ["sqlalchemy"],
            "wraps_after_unpatch": 0,
            "spans_after_unpatch": 0,
            "report": ["patched"],
            "wraps": 1,
            "spans": 1,
        },
    ),
    "unpatch twice and before any patch": (
        """
        import sqlalchemy as sa
        integration.unpatch()
        obs.instrument_all(only=["sqlalchemy"])
        integration.unpatch()
        integration.unpatch()
        out = {"wraps": wraps(), "spans": spans(sa.create_engine("sqlite://"))}
        """,
        {"wraps": 0, "spans": 0},
    ),
    "engines made before the patch": (
        """
        import sqlalchemy as sa
        from sqlalchemy.ext.asyncio import create_async_engine
        sync, asynchronous = sa.create_engine("sqlite://"), create_async_engine("sqlite+aiosqlite://")
        copy = sync.execution_options(isolation_level="AUTOCOMMIT")  # shares dialect and pool
        out = {"before": spans(sync)}
        obs.instrument_all(only=["sqlalchemy"])
        out["after_patch"] = spans(sync)
        out["copy"] = spans(copy)
        obs.uninstrument_all()
        out["after_unpatch"] = spans(sync) + spans(copy)
        obs.instrument_sqlalchemy(sync, asynchronous)
        out["spans"] = spans(sync)
        out["async"] = async_spans(asynchronous)
        """,
        {"before": 0, "after_patch": 1, "copy": 1, "spans": 1, "async": 1, "after_unpatch": 0},
    ),
    "engines made before the patch, instrumented by hand, survive uninstrument_all": (
        """
        import sqlalchemy as sa
        by_hand, found = sa.create_engine("sqlite://"), sa.create_engine("sqlite://")
        obs.instrument_sqlalchemy(by_hand)
        obs.instrument_all(only=["sqlalchemy"])
        out = {"patched": spans(by_hand) + spans(found)}
        obs.uninstrument_all()
        out["by_hand"], out["found"] = spans(by_hand), spans(found)
        """,
        {"patched": 2, "by_hand": 1, "found": 0},
    ),
    "supported range accepts the installed version": (
        """
        import sqlalchemy
        from obs_middleware.integrations._registry import version_in_range
        spec = integration.supported.removeprefix("sqlalchemy")
        out = {"ok": version_in_range(sqlalchemy.__version__, spec), "spec": spec}
        """,
        {"ok": True, "spec": ">=2.0,<2.2"},
    ),
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_patch_ordering(name: str) -> None:
    body, expected = SCENARIOS[name]
    script = PRELUDE + textwrap.dedent(body) + "\nprint(json.dumps(out))\n"
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == expected
