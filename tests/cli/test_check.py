"""``obs check``: what ``instrument_all()`` would patch, without patching anything."""

from __future__ import annotations

import json

import pytest

from obs_middleware.cli import check, main
from obs_middleware.integrations._registry import INTEGRATIONS, Integration


def test_plan_has_one_row_per_registered_integration_with_its_verdict(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = (
        Integration("logging", "logging", None, ""),
        Integration("ghost", "no_such_module_xyz", "no-such-dist-xyz", ">=1,<2"),
        Integration("old", "pytest", "pytest", ">=1,<2"),
        Integration("fits", "pytest", "pytest", ">=1"),
    )
    monkeypatch.setattr(check, "INTEGRATIONS", fake)
    verdicts = {row["integration"]: row["verdict"] for row in check.plan()}
    assert verdicts == {
        "logging": "patch",
        "ghost": "skip: not installed",
        "old": "skip: version outside the supported range",
        "fits": "patch",
    }


def test_an_integration_without_a_distribution_reports_its_client_layer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    comfyui = [i for i in INTEGRATIONS if i.name == "comfyui"]
    if not comfyui:
        pytest.skip("the comfyui integration is not registered")
    monkeypatch.setattr(check, "INTEGRATIONS", tuple(comfyui))
    (row,) = check.plan()
    assert row["library"] == "comfy-api-simplified"
    assert str(row["verdict"]).startswith("patch")


def test_check_command_prints_the_plan_as_json_and_as_a_table(capsys) -> None:
    assert main(["check", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["integration"] for r in rows] == [i.name for i in INTEGRATIONS]
    assert main(["check"]) == 0
    out = capsys.readouterr().out
    assert "obs check" in out and "would be patched" in out
