"""Kubernetes manifests: valid for Kubernetes and prometheus-operator, one source of rules.

The Service is validated by ``kubernetes-validate`` (the Kubernetes OpenAPI schemas, strict);
the ServiceMonitor and PrometheusRule against the ``openAPIV3Schema`` of prometheus-operator
v0.93.0's CRDs (``k8s_schemas/``, from ``example/prometheus-operator-crd/``), made strict the way
``kubectl --validate=strict`` is: an unknown field is an error, not silently pruned.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from obs_middleware.cli import _k8s
from obs_middleware.exporters.tinybird import asset_path

SCHEMAS = Path(__file__).parent / "k8s_schemas"
ASSET = Path(asset_path("kubernetes", "obs-middleware.yaml"))
K8S_VERSION = "1.30"


def strict(schema: Any) -> Any:
    """Every object schema with properties and no stated extras: additionalProperties false.

    Go's ``^(?i)…`` (a flag after the anchor) is written ``(?i)^…`` for Python's ``re``.
    """
    if isinstance(schema, dict):
        schema = {k: strict(v) for k, v in schema.items()}
        pattern = schema.get("pattern")
        if isinstance(pattern, str) and pattern.startswith("^(?i)"):
            schema["pattern"] = "(?i)^" + pattern[len("^(?i)") :]
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    return schema


def crd_schema(kind: str) -> dict[str, Any]:
    return strict(json.loads((SCHEMAS / f"{kind.lower()}-monitoring-v1.json").read_text()))


def validate(doc: dict[str, Any]) -> None:
    """Raise if ``doc`` is not a valid object of its kind."""
    if doc["apiVersion"] == "monitoring.coreos.com/v1":
        jsonschema.validate(doc, crd_schema(doc["kind"]))
        # The CRD schema leaves metadata to the API server: check it as a core object's.
        holder = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": doc["metadata"]}
        kubernetes_validate.validate(holder, K8S_VERSION, strict=True)
    else:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_shipped_manifests_are_what_the_generator_builds() -> None:
    assert ASSET.read_text(encoding="utf-8") == _k8s.render(), (
        "the shipped manifests are stale: obs assets k8s > "
        "src/obs_middleware/exporters/assets/kubernetes/obs-middleware.yaml"
    )


def test_shipped_manifests_validate() -> None:
    docs = list(yaml.safe_load_all(ASSET.read_text()))
    assert [d["kind"] for d in docs] == ["Service", "ServiceMonitor", "PrometheusRule"]
    for doc in docs:
        validate(doc)


def test_manifests_with_options_validate_and_carry_them() -> None:
    target = _k8s.Target(
        app="shop-api",
        namespace="shop",
        port=8000,
        interval="15s",
        labels={"release": "kube-prometheus-stack"},
        runbook_base="https://wiki.example.com/obs/runbooks",
    )
    docs = _k8s.manifests(target)
    for doc in docs:
        validate(doc)
        assert doc["metadata"]["namespace"] == "shop"
        assert doc["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    svc, monitor, _rule = docs
    # The ServiceMonitor selects the Service and scrapes its named port.
    assert monitor["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == svc["spec"]["ports"][0]["name"]
    assert svc["spec"]["ports"][0]["targetPort"] == 8000
    assert svc["spec"]["selector"] == {"app.kubernetes.io/name": "shop-api"}
    assert [d["kind"] for d in _k8s.manifests(target, with_service=False)] == [
        "ServiceMonitor",
        "PrometheusRule",
    ]


@pytest.mark.parametrize(
    ("kind", "path", "value"),
    [
        ("ServiceMonitor", ["spec", "endpoints", 0, "intervall"], "30s"),  # a typo
        ("ServiceMonitor", ["spec", "endpoints", 0, "port"], 9464),  # a name, not a number
        ("PrometheusRule", ["spec", "groups", 0, "rules", 0, "expr"], None),
        ("PrometheusRule", ["spec", "groups", 0, "name"], ""),
    ],
)
def test_the_crd_schemas_reject_broken_manifests(kind: str, path: list[Any], value: Any) -> None:
    doc = copy.deepcopy(next(d for d in _k8s.manifests(_k8s.Target()) if d["kind"] == kind))
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, crd_schema(kind))


def test_prometheus_rule_groups_are_the_alert_rules_file_groups() -> None:
    shipped = yaml.safe_load(Path(asset_path("prometheus", "alerts.yml")).read_text())
    (rule,) = [d for d in yaml.safe_load_all(ASSET.read_text()) if d["kind"] == "PrometheusRule"]
    assert rule["spec"]["groups"] == shipped["groups"]
    assert _k8s.prometheus_rule(_k8s.Target(app="x"))["spec"]["groups"] == shipped["groups"]


def test_runbook_base_changes_the_links_and_nothing_else() -> None:
    base = "https://git.example.com/acme/obs/blob/v1/docs/RUNBOOKS.md"
    moved = _k8s.rule_groups(base)
    shipped = _k8s.rule_groups()
    urls = []
    for group_moved, group in zip(moved, shipped, strict=True):
        for rule_moved, rule in zip(group_moved["rules"], group["rules"], strict=True):
            if "alert" not in rule:
                assert rule_moved == rule
                continue
            url = rule_moved["annotations"].pop("runbook_url")
            assert url == base + "#" + rule["annotations"].pop("runbook_url").split("#")[1]
            urls.append(url)
            assert rule_moved == rule
    assert len(urls) == 8
