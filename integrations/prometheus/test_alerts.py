"""The shipped alerts.yml: valid for promtool, and its unit tests (alerts_test.yml) pass.

Verified with promtool from Debian's prometheus 2.42.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from obs_middleware.exporters.tinybird import asset_path

HERE = Path(__file__).parent


def promtool_run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=HERE, check=False, capture_output=True, text=True)


def test_rules_are_valid(promtool):
    out = promtool_run(promtool, "check", "rules", asset_path("prometheus", "alerts.yml"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 15 rules found" in out.stdout


def test_rule_unit_tests_pass(promtool):
    out = promtool_run(promtool, "test", "rules", "alerts_test.yml")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout
