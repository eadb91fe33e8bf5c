"""Settings shared by every suite (tests/, integrations/, benchmarks/)."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

from hypothesis import HealthCheck, settings

# Property tests check behaviour, not speed: on a busy 2-core CI machine input generation can be
# slow, and a deadline would fail a correct test. In CI the examples are derandomized, so a red run
# is reproducible from the same commit.
settings.register_profile(
    "obs",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=bool(os.environ.get("CI")),
)
settings.load_profile("obs")

# The disk spool is on by default, in the user's state directory: a suite must neither leave
# batches there nor replay the batches of another run (an emulator may get the same port back).
# Set before any test (and inherited by the processes tests start); removed at exit.
_SPOOL_HOME = tempfile.mkdtemp(prefix="obs-tests-state-")
os.environ["XDG_STATE_HOME"] = _SPOOL_HOME
atexit.register(shutil.rmtree, _SPOOL_HOME, True)
