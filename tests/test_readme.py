"""The README is a tour that runs: every Python block of README.md runs as written.

Each Python block runs in its own interpreter, in a temporary directory, with the OpenAI
emulator (``obs_middleware.testing.emulators``, 127.0.0.1) standing in for the API through the
SDK's own ``OPENAI_BASE_URL``. A block may be followed by a comment the reader does not see,
``<!-- readme-test: GET /path -> 200, POST /other?x=1 -> 200 -->``: the ``app`` the block built
(ASGI, or Flask's) then answers those requests with those statuses, and the console exporter's
output names no ``/metrics`` request (scrapes are not traced). ``<!-- readme-test: skip
(reason) -->`` leaves a block out; no block needs it today. The blocks also pass ``mypy
--strict``, as a user's app would. Shell blocks are not run: the ``obs`` commands they show are
driven by tests/cli/test_pip_user.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from obs_middleware.testing.emulators.openai import OpenAIEmulator

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SHELL = {"bash", "sh", "shell", "console"}

_FENCE = re.compile(r"^```([\w-]*)\n(.*?)^```\n(?:\s*<!-- readme-test: (.*?) -->)?", re.M | re.S)
_REQUEST = re.compile(r"^(GET|POST|PUT|PATCH|DELETE) (\S+) -> (\d{3})$")


@dataclass
class Block:
    line: int
    lang: str
    code: str
    directive: str | None

    @property
    def requests(self) -> list[tuple[str, str, int]]:
        if not self.directive or self.directive.startswith("skip"):
            return []
        out = []
        for item in self.directive.split(","):
            m = _REQUEST.match(item.strip())
            assert m, f"README.md:{self.line}: not a request: {item.strip()!r}"
            out.append((m.group(1), m.group(2), int(m.group(3))))
        return out


def blocks() -> list[Block]:
    text = README.read_text()
    return [
        Block(text.count("\n", 0, m.start()) + 1, m.group(1), m.group(2), m.group(3))
        for m in _FENCE.finditer(text)
    ]


PYTHON = [b for b in blocks() if b.lang == "python"]

# Runs in the block's interpreter: the block as module main, then the requests against its app.
DRIVER = r"""
import asyncio, importlib, json, sys
import obs_middleware as obs

requests, out = json.loads(sys.argv[1]), sys.argv[2]
sys.path.insert(0, ".")
main = importlib.import_module("main")  # as `uvicorn main:app` imports it
answers = []
if requests:
    app = main.app
    if hasattr(app, "test_client"):  # Flask
        client = app.test_client()
        for method, path, _ in requests:
            response = client.open(path, method=method)
            answers.append(response.status_code)
            response.close()
    else:
        import httpx

        async def drive():
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
                for method, path, _ in requests:
                    answers.append((await client.request(method, path)).status_code)

        asyncio.run(drive())
obs.flush(10.0)
with open(out, "w") as f:
    json.dump(answers, f)
"""


@pytest.fixture(scope="module")
def openai_url() -> str:
    with OpenAIEmulator() as emu:
        yield emu.url + "/v1"


def test_the_readme_has_python_blocks_and_every_block_is_python_or_shell() -> None:
    assert len(PYTHON) >= 5  # FastAPI, Starlette, Litestar, Flask, sampling
    for block in blocks():
        assert block.lang in SHELL | {"python"}, f"README.md:{block.line}: {block.lang!r}"
        if block.lang in SHELL:
            assert block.directive is None, f"README.md:{block.line}: shell blocks are not run"


def test_the_first_example_is_fastapi_after_the_install_line() -> None:
    first = PYTHON[0].code
    assert "from fastapi import FastAPI" in first
    install = next(b for b in blocks() if b.lang in SHELL).code
    assert re.search(r"^pip install 'obs-middleware\[[a-z,]+\]'$", install, re.M)


def test_the_install_line_names_only_extras_that_exist() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    section = pyproject.split("[project.optional-dependencies]")[1].split("\n[")[0]
    extras = set(re.findall(r"^([a-z]+) = ", section, re.M))
    text = README.read_text()
    for named in re.findall(r"obs-middleware\[([a-z,]+)\]", text):
        assert set(named.split(",")) <= extras, named


def test_every_relative_link_and_repository_path_exists() -> None:
    text = README.read_text()
    links = set(re.findall(r"\]\(([^)#:]+)\)", text))
    paths = {f"src/{p}" for p in re.findall(r"`(obs_middleware/[\w/.]+\.\w+)`", text)}
    missing = {p for p in links | paths if not (ROOT / p).exists()}
    assert not missing, missing


@pytest.mark.parametrize("block", PYTHON, ids=[f"line{b.line}" for b in PYTHON])
def test_python_block_runs(block: Block, tmp_path: Path, openai_url: str) -> None:
    if block.directive and block.directive.startswith("skip"):
        pytest.skip(f"README.md:{block.line}: {block.directive}")
    code, answers = tmp_path / "main.py", tmp_path / "answers.json"
    code.write_text(block.code)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OBS_", "OPENAI_"))}
    env |= {"OPENAI_BASE_URL": openai_url, "OPENAI_API_KEY": "sk-readme-test"}
    env.pop("DATABASE_URL", None)
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, json.dumps(block.requests), str(answers)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"README.md:{block.line}\n{proc.stderr}"
    assert json.loads(answers.read_text()) == [status for _, _, status in block.requests]
    assert "internal error" not in proc.stderr, proc.stderr
    assert "GET /metrics" not in proc.stdout  # no server span for a scrape
    for method, path, _ in block.requests:
        if path != "/metrics":
            assert f"{method} /" in proc.stdout, f"no server span for {method} {path}"


def test_python_blocks_pass_mypy_strict(tmp_path: Path) -> None:
    files = []
    for i, block in enumerate(PYTHON):
        path = tmp_path / f"readme_block_{i}.py"
        path.write_text(block.code)
        files.append(path.name)
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / "cache"), *files],
        cwd=tmp_path,
        env=os.environ | {"MYPYPATH": str(ROOT / "src")},  # this tree, not an installed copy
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
