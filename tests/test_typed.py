"""Types reach the user: the package ships ``py.typed`` and an app using the public API passes
``mypy --strict`` with no flags of its own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import obs_middleware as obs

USER_APP = '''
"""A user's app, typed as a FastAPI/Starlette team would write it."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import obs_middleware as obs

obs.configure(service="images-api", sampling=obs.SamplingOptions(traces_per_s=50))


@obs.traced
def render(prompt: str) -> str:
    with obs.span("resize", width=512) as span:
        span.set(height=512)
    return prompt.upper()


async def images(request: Request) -> JSONResponse:
    obs.set_user("u1", tier="pro")
    obs.emit("image.queued", size="512x512")
    return JSONResponse({"image": render("cat")})


app = Starlette(routes=[Route("/v1/images", images, methods=["POST"])])
app.add_middleware(obs.ObsMiddleware)
report: obs.Report = obs.instrument_all()
config: obs.Config = obs.configure(exporters="none")
ok: bool = obs.flush(1.0)
'''


def test_the_package_ships_py_typed() -> None:
    assert (Path(obs.__file__).parent / "py.typed").is_file()


def test_a_user_app_on_the_public_api_passes_mypy_strict(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(USER_APP)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--cache-dir",
            str(tmp_path / "cache"),
            "app.py",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
