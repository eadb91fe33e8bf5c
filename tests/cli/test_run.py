"""``obs run``: the command line, the environment it prepares, the bootstrap's chaining to the
``sitecustomize`` that was there before, and its failures (never the app's). The real servers:
tests/system/test_obs_run.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from obs_middleware.cli import _autorun, main
from obs_middleware.cli.run import BOOTSTRAP, prepare

OBS_RUN = [sys.executable, "-m", "obs_middleware.cli", "run", "--", sys.executable]


def obs_run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*OBS_RUN, *args],
        env={**os.environ, "OBS_EXPORTERS": "none", **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_prepare_puts_the_bootstrap_first_once_and_makes_a_metrics_folder(tmp_path: Path) -> None:
    env = {"PYTHONPATH": os.pathsep.join(["/app", BOOTSTRAP, "/lib"]), "TMPDIR": str(tmp_path)}
    made = prepare(env)
    assert env["PYTHONPATH"] == os.pathsep.join([BOOTSTRAP, "/app", "/lib"])
    assert made is not None
    assert Path(made).is_dir()
    assert env["OBS_PROMETHEUS_MULTIPROC_DIR"] == made
    os.rmdir(made)


@pytest.mark.parametrize("variable", ["OBS_PROMETHEUS_MULTIPROC_DIR", "PROMETHEUS_MULTIPROC_DIR"])
def test_prepare_keeps_a_metrics_folder_the_user_named(variable: str) -> None:
    env = {variable: "/srv/metrics"}
    assert prepare(env) is None
    assert env == {variable: "/srv/metrics", "PYTHONPATH": BOOTSTRAP, "OBS_LOGS": "warning"}


def test_prepare_sends_warnings_through_the_pipeline_unless_told_otherwise() -> None:
    env = {"OBS_PROMETHEUS_MULTIPROC_DIR": "/srv/metrics", "OBS_LOGS": "off"}
    prepare(env)
    assert env["OBS_LOGS"] == "off"


def test_without_a_command_or_with_an_unknown_one_nothing_runs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["run"]) == 2
    assert main(["run", "--", "obs-no-such-command"]) == 127
    err = capsys.readouterr().err
    assert "no command given" in err
    assert "obs-no-such-command: command not found" in err


def test_the_command_gets_its_arguments_exit_code_and_an_instrumented_interpreter() -> None:
    script = (
        "import sys, obs_middleware.cli._autorun as a, obs_middleware._setup as s;"
        "print(sys.argv[1:], a._started, s.current_pipeline() is not None);"
        "sys.exit(3)"
    )
    proc = obs_run("-c", script, "--flag", "x")
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout.strip() == "['--flag', 'x'] True True"
    assert proc.stderr == ""


def test_the_sitecustomize_that_was_on_the_path_still_runs(tmp_path: Path) -> None:
    (tmp_path / "sitecustomize.py").write_text("import os\nos.environ['USER_SITE_RAN'] = '1'\n")
    script = (
        "import os, sys;"
        "print(os.environ.get('USER_SITE_RAN'), sys.modules['sitecustomize'].__file__)"
    )
    proc = obs_run(
        "-c",
        script,
        env={"PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["1", str(tmp_path / "sitecustomize.py")]


def test_a_failing_user_sitecustomize_is_reported_as_site_would_and_the_app_runs(
    tmp_path: Path,
) -> None:
    (tmp_path / "sitecustomize.py").write_text("raise RuntimeError('user site broke')\n")
    path = f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    proc = obs_run("-c", "print('app ran')", env={"PYTHONPATH": path})
    assert proc.returncode == 0
    assert proc.stdout.strip() == "app ran"
    assert "Error in sitecustomize" in proc.stderr
    assert "RuntimeError: user site broke" in proc.stderr


def test_an_interpreter_that_cannot_import_us_runs_the_app_uninstrumented(tmp_path: Path) -> None:
    shadow = tmp_path / "obs_middleware"
    shadow.mkdir()
    (shadow / "__init__.py").write_text("raise ImportError('shadowed')\n")
    # What obs run gives the command, with another obs_middleware ahead of ours.
    path = os.pathsep.join([BOOTSTRAP, str(tmp_path), os.environ.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-c", "print('app ran')"],
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0
    assert proc.stdout.strip() == "app ran"
    assert proc.stderr.count("obs run: cannot import obs_middleware") == 1
    assert "shadowed" in proc.stderr


def test_a_failing_bootstrap_warns_once_and_leaves_nothing_patched(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken() -> None:
        raise OSError("no disk")

    monkeypatch.setattr(_autorun, "_started", False)
    monkeypatch.setattr(_autorun._setup, "build_config", broken)
    _autorun.start()
    _autorun.start()
    err = capsys.readouterr().err
    assert err.count("obs run: instrumentation failed") == 1
    assert "OSError: no disk" in err
    assert "the app runs uninstrumented" in err
    assert not _autorun._patches


METRICS_SCRIPT = """
from starlette.applications import Starlette
from starlette.testclient import TestClient
client = TestClient(Starlette())
print(client.get("/metrics").status_code, client.get("/custom").status_code)
"""


@pytest.mark.parametrize(
    ("path", "statuses"),
    [(None, "200 404"), ("/custom", "404 200"), ("", "404 404"), ("metrics", "404 404")],
)
def test_metrics_path_is_set_by_obs_metrics_path(path: str | None, statuses: str) -> None:
    env = {} if path is None else {"OBS_METRICS_PATH": path}
    proc = obs_run("-c", METRICS_SCRIPT, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[-2:] == statuses.split()
    assert ("is not a path" in proc.stderr) == (path == "metrics")


def test_the_standard_librarys_helper_processes_are_left_alone() -> None:
    # multiprocessing's resource tracker (uvicorn --workers spawns one) serves nothing.
    script = "from multiprocessing.resource_tracker import main as _; import sys;" + (
        "import obs_middleware.cli._autorun as a; print(a._started)"
    )
    proc = obs_run("-B", "-c", script)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"
    assert (
        obs_run(
            "-B", "-c", "import obs_middleware.cli._autorun as a; print(a._started)"
        ).stdout.strip()
        == "True"
    )


def test_an_app_configuring_itself_under_obs_run_is_told_once() -> None:
    script = (
        "import obs_middleware as obs; obs.configure(service='own'); obs.configure(service='own');"
        "print(obs._setup.current_config().service)"
    )
    proc = obs_run("-c", script)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "own"  # the app's choice holds
    assert proc.stderr.count("the app's own obs.configure() replaced") == 1
    quiet = obs_run("-c", script, env={"OBS_METRICS_PATH": ""})  # nothing to lose: no warning
    assert quiet.stderr == ""
