"""``obs run -- COMMAND``: run a Python server instrumented, without a line of code (as
``ddtrace-run`` and ``opentelemetry-instrument`` do).

It puts the folder holding our ``sitecustomize`` (``_bootstrap/``) first on ``PYTHONPATH``, so
every Python process of the command (uvicorn's spawned workers, gunicorn's forked ones, a
``python app.py``) instruments itself at startup (``_autorun``), then ``exec``s the command: the
process becomes the command, with its own pid, signals and exit status.

Application logs at WARNING and above go through the pipeline (``OBS_LOGS=warning``) unless
``OBS_LOGS`` says otherwise: a zero-code setup has no other place to ask for them.

Several workers sum their metrics through a folder they share (``OBS_PROMETHEUS_MULTIPROC_DIR``).
When neither it nor ``PROMETHEUS_MULTIPROC_DIR`` is set, ``obs run`` makes a fresh private one in
the temp directory. Since ``exec`` leaves no process of ours to clean up after the command, a
small reaper is forked first (detached, in its own session, stdio closed): it holds the read end
of a pipe whose write end the command inherits (and passes to forked workers), and removes the
folder once every holder has exited (end of file). Where ``fork`` is unavailable the folder is
left to the temp directory's own cleaning. A folder the user named is never removed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["BOOTSTRAP", "prepare", "run"]

BOOTSTRAP = str(Path(__file__).resolve().with_name("_bootstrap"))
_REMOVE_TRIES = 20  # every 0.5 s


def run(args: argparse.Namespace) -> int:
    """Exec the command instrumented; returns an exit code only when it cannot be started."""
    command = list(args.argv)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        print("obs run: no command given: obs run -- uvicorn app:app", file=sys.stderr)
        return 2
    executable = shutil.which(command[0])
    if executable is None:
        print(f"obs run: {command[0]}: command not found", file=sys.stderr)
        return 127
    directory = prepare(os.environ)
    if directory is not None:
        _reap_when_done(directory)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(executable, command)
    except OSError as exc:
        print(f"obs run: cannot run {command[0]}: {exc}", file=sys.stderr)
        return 126
    return 0  # pragma: no cover - execv does not return


def prepare(environ: os._Environ[str] | dict[str, str]) -> str | None:
    """Set what the command's processes need in ``environ``: our bootstrap first on
    ``PYTHONPATH`` (once), ``OBS_LOGS=warning`` unless set, and a fresh metrics folder when none
    is set. Returns the folder made here (None: the user's, or none needed)."""
    environ.setdefault("OBS_LOGS", "warning")
    parts = [p for p in environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != BOOTSTRAP]
    environ["PYTHONPATH"] = os.pathsep.join([BOOTSTRAP, *parts])
    if environ.get("OBS_PROMETHEUS_MULTIPROC_DIR") or environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return None
    directory = tempfile.mkdtemp(prefix="obs-run-metrics-")
    environ["OBS_PROMETHEUS_MULTIPROC_DIR"] = directory
    return directory


def _reap_when_done(directory: str) -> None:
    """Fork a detached process that removes ``directory`` once the command and its workers exit."""
    if not hasattr(os, "fork"):
        return
    read_fd, write_fd = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(read_fd)
        os.close(write_fd)
        return
    if pid == 0:  # pragma: no cover - runs in the forked processes (checked by tests/system)
        _reaper(directory, read_fd, write_fd)
    os.waitpid(pid, 0)  # the first child exits at once: its child is the reaper
    os.close(read_fd)
    os.set_inheritable(write_fd, True)  # kept open across exec, and by forked workers


def _reaper(directory: str, read_fd: int, write_fd: int) -> None:  # pragma: no cover
    try:
        os.setsid()  # no terminal signal (Ctrl-C to the server) reaches the reaper
        if os.fork() != 0:
            os._exit(0)
        os.close(write_fd)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):  # never hold the caller's pipes open
            os.dup2(devnull, fd)
        os.closerange(3, read_fd)
        os.closerange(read_fd + 1, 1 << 16)
        while os.read(read_fd, 1024):
            pass
        for _ in range(_REMOVE_TRIES):  # a straggler without the pipe may still write a file
            shutil.rmtree(directory, ignore_errors=True)
            if not os.path.exists(directory):
                break
            time.sleep(0.5)
    finally:
        os._exit(0)
