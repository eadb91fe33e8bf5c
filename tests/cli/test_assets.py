"""``obs assets``: the shipped dashboard, alert rules (with runbook links) and manifests.

Also docs/RUNBOOKS.md: a section per alert, each alert's ``runbook_url`` an anchor of it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from obs_middleware._core.status import NOT_FAILURES, USER_ERRORS
from obs_middleware.cli import main
from obs_middleware.cli._alerts import DEFAULT_RUNBOOK_BASE, alerts_text
from obs_middleware.exporters.tinybird import asset_path

ROOT = Path(__file__).resolve().parents[2]
RUNBOOKS = ROOT / "docs" / "RUNBOOKS.md"


def alerts() -> list[dict]:
    doc = yaml.safe_load(Path(asset_path("prometheus", "alerts.yml")).read_text())
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return slug.replace(" ", "-")


def sections() -> dict[str, str]:
    """Anchor -> body of each ``## `` section of docs/RUNBOOKS.md."""
    parts = re.split(r"^## (.+)$", RUNBOOKS.read_text(), flags=re.MULTILINE)
    return {
        github_anchor(title): body for title, body in zip(parts[1::2], parts[2::2], strict=True)
    }


def test_every_alert_links_to_its_runbook_section() -> None:
    found = sections()
    names = [rule["alert"] for rule in alerts()]
    assert len(names) == 8
    for rule in alerts():
        url = rule["annotations"]["runbook_url"]
        base, _, anchor = url.partition("#")
        assert base == DEFAULT_RUNBOOK_BASE
        assert (ROOT / base).is_file()
        assert anchor == rule["alert"].lower()
        assert anchor in found, f"{rule['alert']}: no section #{anchor} in docs/RUNBOOKS.md"
        body = found[anchor]
        # What it means, then the first three things to check.
        assert all(f"\n{n}. " in body for n in (1, 2, 3)), rule["alert"]
    # No section for an alert that is gone.
    assert set(found) == {n.lower() for n in names}


def test_job_alerts_are_among_the_rules() -> None:
    exprs = {rule["alert"]: rule["expr"] for rule in alerts()}
    assert "job_service_type:obs_job_failure_ratio:rate5m" in exprs["ObsJobFailures"]
    assert "job_service_type:obs_job_queue_p95_seconds:rate5m" in exprs["ObsJobQueueSlow"]


def test_the_job_failure_rule_reads_statuses_as_the_core_does() -> None:
    doc = yaml.safe_load(Path(asset_path("prometheus", "alerts.yml")).read_text())
    rules = {r.get("record"): r["expr"] for g in doc["groups"] for r in g["rules"]}
    (not_failures,) = re.findall(
        r'job_status!~"([^"]+)"', rules["job_service_type:obs_job_failure_ratio:rate5m"]
    )
    assert set(not_failures.split("|")) == NOT_FAILURES | USER_ERRORS


def test_assets_grafana_prints_the_shipped_dashboard(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["assets", "grafana"]) == 0
    assert capsys.readouterr().out == Path(asset_path("grafana", "obs-middleware.json")).read_text()


def test_assets_alerts_moves_every_runbook_link(capsys: pytest.CaptureFixture[str]) -> None:
    base = "https://wiki.example.com/obs/runbooks"
    assert main(["assets", "alerts", "--runbook-base", base]) == 0
    out = capsys.readouterr().out
    assert out.count(f"runbook_url: {base}#") == 8
    assert DEFAULT_RUNBOOK_BASE + "#" not in out
    assert out.replace(base, DEFAULT_RUNBOOK_BASE) == alerts_text()  # nothing else changed
    assert main(["assets", "alerts"]) == 0
    assert capsys.readouterr().out == alerts_text()


def test_assets_k8s_takes_namespace_labels_and_app(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["assets", "k8s", "--app", "shop-api", "--namespace", "shop"]
    assert main([*args, "--label", "release=kps", "--label", "team=ml", "--no-service"]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [d["kind"] for d in docs] == ["ServiceMonitor", "PrometheusRule"]
    for doc in docs:
        assert doc["metadata"]["namespace"] == "shop"
        assert doc["metadata"]["labels"]["release"] == "kps"
        assert doc["metadata"]["labels"]["team"] == "ml"
        assert doc["metadata"]["labels"]["app.kubernetes.io/name"] == "shop-api"


def test_assets_k8s_rejects_a_label_without_a_value(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["assets", "k8s", "--label", "release"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err
