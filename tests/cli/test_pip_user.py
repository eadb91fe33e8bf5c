"""Every ``obs`` command as a pip user runs it: only what ``pip install 'obs-middleware[all]'``
installs is importable, none of the dev extra.

A fresh venv per run would download every dependency; instead the test builds a site directory
of links to the installed distributions that ``[all]`` requires (walked from pyproject.toml's
extras and each distribution's own requirements, markers evaluated) and runs the commands with
``python -S`` on that directory and ``src/`` alone. A module of the dev extra (pytest, httpx for
the tests, asyncpg…) is then absent exactly as it is in a user's venv. The same site without
Litestar shows ``obs demo`` naming the extra to install.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import obs_middleware as obs

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
NAME = "obs-middleware"
# What a fresh venv has besides the packages pip installs into it.
VENV_BASE = {"pip", "setuptools"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_closure(extra: str, leave_out: Iterable[str] = ()) -> set[str]:
    """The distributions ``pip install 'obs-middleware[extra]'`` installs (normalised names)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    skip = {_norm(n) for n in leave_out}
    todo = [Requirement(r) for r in project["dependencies"]]
    seen_extras: set[str] = set()
    pending = [extra]
    while pending:  # the project's own extras, as "obs-middleware[a,b]" names them
        name = pending.pop()
        if name in seen_extras:
            continue
        seen_extras.add(name)
        for text in extras[name]:
            req = Requirement(text)
            if _norm(req.name) == NAME:
                pending += sorted(req.extras)
            else:
                todo.append(req)
    closure: set[str] = set()
    while todo:
        req = todo.pop()
        name = _norm(req.name)
        if name in skip or name in closure:
            continue
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # not for this platform or Python (a marker pip would evaluate the same way)
        closure.add(name)
        for text in dist.requires or []:
            dep = Requirement(text)
            envs = [{"extra": e} for e in ("", *req.extras)]
            if dep.marker is None or any(dep.marker.evaluate(env) for env in envs):
                todo.append(dep)
    return closure


def pip_user_site(directory: Path, leave_out: Iterable[str] = ()) -> Path:
    """A site directory linking the installed files of ``[all]``'s distributions only."""
    directory.mkdir()
    keep = requirement_closure("all", leave_out) | VENV_BASE
    for dist in importlib.metadata.distributions():
        name = _norm(dist.metadata["Name"])
        if name not in keep and name != NAME:
            continue
        base = Path(str(dist.locate_file("")))
        tops = {Path(str(f)).parts[0] for f in dist.files or []}
        if name == NAME:  # its metadata (the version) only: the code is src/ of this tree
            tops = {t for t in tops if t.endswith(".dist-info")}
        for top in tops - {".."}:
            link = directory / top
            if (base / top).exists() and not link.exists():
                link.symlink_to(base / top)
    return directory


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return pip_user_site(tmp_path_factory.mktemp("pip-user") / "site-packages")


def obs_command(*args: str) -> list[str]:
    return [sys.executable, "-S", "-m", "obs_middleware.cli", *args]


def env_for(site: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OBS_", "PYTHON"))}
    return env | {"PYTHONPATH": f"{SRC}{os.pathsep}{site}", "PYTHONNOUSERSITE": "1"}


def run_obs(site: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        obs_command(*args),
        cwd=cwd,
        env=env_for(site),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_site_has_the_all_extra_and_not_the_dev_one(site: Path, tmp_path: Path) -> None:
    probe = (
        "import importlib.util as u; print(*[m for m in ('litestar', 'fastapi', 'flask', "
        "'sqlalchemy', 'prometheus_client', 'uvicorn', 'openai', 'pytest', 'hypothesis', "
        "'asyncpg', 'mypy') if u.find_spec(m)])"
    )
    proc = subprocess.run(
        [sys.executable, "-S", "-c", probe],
        env=env_for(site),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert proc.stdout.split() == [
        "litestar", "fastapi", "flask", "sqlalchemy", "prometheus_client", "uvicorn", "openai"
    ]  # fmt: skip


def test_version(site: Path, tmp_path: Path) -> None:
    proc = run_obs(site, "--version", cwd=tmp_path)
    assert (proc.returncode, proc.stdout.strip()) == (0, f"obs-middleware {obs.__version__}")


def test_check_lists_what_instrument_all_would_patch(site: Path, tmp_path: Path) -> None:
    proc = run_obs(site, "check", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "obs check: instrument_all()" in proc.stdout
    assert re.search(r"^litestar +litestar +[\d.]+ .* patch$", proc.stdout, re.M)


def test_demo_then_report_then_dashboard_on_its_store(site: Path, tmp_path: Path) -> None:
    store, jsonl = tmp_path / "obs.db", tmp_path / "obs-demo.jsonl"
    demo = run_obs(site, "demo", "--requests", "60", "--store", str(store), cwd=tmp_path)
    assert demo.returncode == 0, demo.stderr
    assert "skipped" not in demo.stdout  # every provider SDK came with the extra
    assert "AI calls by provider and model" in demo.stdout
    assert store.is_file() and jsonl.is_file()

    report = run_obs(site, "report", "--store", str(store), cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    assert "Requests by route" in report.stdout and "POST /v1/images" in report.stdout

    port = _free_port()
    dashboard = subprocess.Popen(
        obs_command("dashboard", "--store", str(store), "--port", str(port)),
        cwd=tmp_path,
        env=env_for(site),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        meta = _get(f"http://127.0.0.1:{port}/api/meta", dashboard)
    finally:
        dashboard.send_signal(signal.SIGINT)
        out, _ = dashboard.communicate(timeout=30)
    assert '"obs-demo"' in meta
    assert f"obs dashboard: http://127.0.0.1:{port}/" in out


def test_report_on_a_jsonl_file_says_it_expects_the_sqlite_store(
    site: Path, tmp_path: Path
) -> None:
    jsonl = tmp_path / "records.jsonl"
    jsonl.write_text('{"type": "span", "name": "GET /"}\n')
    proc = run_obs(site, "report", "--store", str(jsonl), cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr == (
        f"obs report: {jsonl} is not SQLite (file is not a database); --store expects the "
        "SQLite file the 'sqlite' exporter and `obs demo` write (default: $OBS_STORE or "
        "obs.db)\n"
    )


def test_report_without_a_store_points_to_obs_demo(site: Path, tmp_path: Path) -> None:
    proc = run_obs(site, "report", "--store", str(tmp_path / "none.db"), cwd=tmp_path)
    assert proc.returncode == 1
    assert "run `obs demo` to make one" in proc.stderr and "make demo" not in proc.stderr


def test_demo_without_litestar_names_the_extra_to_install(tmp_path: Path) -> None:
    site = pip_user_site(tmp_path / "site-packages", leave_out=["litestar"])
    proc = run_obs(site, "demo", "--requests", "10", cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr == (
        "obs demo needs litestar, not installed here: pip install 'obs-middleware[demo]'\n"
    )
    assert not (tmp_path / "obs.db").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, proc: subprocess.Popen[str]) -> str:
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return str(response.read().decode())
        except OSError:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.1)
