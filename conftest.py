"""Settings shared by every suite (tests/, integrations/, benchmarks/)."""

from __future__ import annotations

import os

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
