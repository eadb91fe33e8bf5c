"""The usual layout: ``db.py`` makes the engine at import, ``main.py`` imports it, then calls
``instrument_all()``. Two real modules in a fresh process, real SQLAlchemy on SQLite, a real
Starlette app driven through its test client."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

DB = """
import sqlalchemy as sa

engine = sa.create_engine("sqlite://")
"""

MAIN = """
import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

import obs_middleware as obs
from obs_middleware.middleware import ObsMiddleware

from db import engine  # made before instrument_all(), as in most apps

obs.instrument_all()


async def items(request):
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT 1 AS id")).all()
    return JSONResponse([r.id for r in rows])


app = ObsMiddleware(Starlette(routes=[Route("/items", items)]))
"""

RUN = """
import json
from starlette.testclient import TestClient
from obs_middleware.testing import capture
import obs_middleware as obs
import main

def request():
    with capture() as cap:
        assert TestClient(main.app).get("/items").json() == [1]
        return [(s["name"], s["parent_id"] is not None) for s in cap.spans]

out = {"instrumented": request()}
obs.uninstrument_all()
out["uninstrumented"] = request()
print(json.dumps(out))
"""


def test_engine_made_at_import_before_instrument_all_yields_query_spans(tmp_path: Path) -> None:
    (tmp_path / "db.py").write_text(textwrap.dedent(DB))
    (tmp_path / "main.py").write_text(textwrap.dedent(MAIN))
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(RUN)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "obs-middleware" not in done.stderr  # no warning: nothing for the user to fix
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {
        "instrumented": [["db.query", True], ["GET /items", False]],
        "uninstrumented": [["GET /items", False]],
    }
