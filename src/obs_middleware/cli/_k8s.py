"""Kubernetes manifests for prometheus-operator, and the alert rules with their runbook links.

One source: the shipped ``exporters/assets/prometheus/alerts.yml``. ``prometheus_rule()`` wraps
its groups unchanged in a ``PrometheusRule``; ``service_monitor()`` has the operator scrape the
pods' metrics port through a ``Service`` (``service()``, selecting the pods by
``app.kubernetes.io/name``). ``runbook_base`` replaces the part of every ``runbook_url`` before
its ``#anchor`` (``_alerts.alerts_text``). The package ships
the default output (``exporters/assets/kubernetes/obs-middleware.yaml``, kept equal by a test);
``obs assets k8s`` prints it for a namespace, app and labels of your own. Needs PyYAML (the
``kubernetes`` extra).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from ._alerts import DEFAULT_RUNBOOK_BASE, alerts_text

__all__ = [
    "Target",
    "manifests",
    "prometheus_rule",
    "render",
    "rule_groups",
    "service",
    "service_monitor",
]

_API = "monitoring.coreos.com/v1"


@dataclass(frozen=True)
class Target:
    """What the manifests describe: the app's pods and where they serve metrics.

    ``app``: the value of the pods' ``app.kubernetes.io/name`` label (the Service selects them by
    it, the ServiceMonitor selects the Service by it); also the objects' name. ``port``: the
    container port of ``/metrics`` (the ``prometheus`` exporter's default, 9464; the app's own
    port when ``metrics_app()`` is mounted in it). ``labels``: added to every object's labels
    (a Prometheus resource's ``ruleSelector``/``serviceMonitorSelector`` often asks for one,
    such as ``release: kube-prometheus-stack``).
    """

    app: str = "my-service"
    namespace: str = "default"
    port: int = 9464
    path: str = "/metrics"
    interval: str = "30s"
    labels: Mapping[str, str] = field(default_factory=dict)
    runbook_base: str = DEFAULT_RUNBOOK_BASE

    def metadata(self, name: str) -> dict[str, Any]:
        """``metadata`` of one object: name, namespace and labels."""
        labels = {"app.kubernetes.io/name": self.app, "app.kubernetes.io/part-of": "obs-middleware"}
        return {"name": name, "namespace": self.namespace, "labels": {**labels, **self.labels}}


def rule_groups(runbook_base: str | None = None) -> list[dict[str, Any]]:
    """The ``groups`` of the shipped alerts.yml (runbook links on ``runbook_base``)."""
    doc = yaml.safe_load(alerts_text(runbook_base))
    groups: list[dict[str, Any]] = copy.deepcopy(doc["groups"])
    return groups


def prometheus_rule(target: Target) -> dict[str, Any]:
    """A ``PrometheusRule`` whose ``spec.groups`` are alerts.yml's groups."""
    return {
        "apiVersion": _API,
        "kind": "PrometheusRule",
        "metadata": target.metadata(f"{target.app}-obs-alerts"),
        "spec": {"groups": rule_groups(target.runbook_base)},
    }


def service(target: Target) -> dict[str, Any]:
    """A ``Service`` exposing the pods' metrics port as the port named ``metrics``."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": target.metadata(f"{target.app}-metrics"),
        "spec": {
            "selector": {"app.kubernetes.io/name": target.app},
            "ports": [
                {
                    "name": "metrics",
                    "port": target.port,
                    "targetPort": target.port,
                    "protocol": "TCP",
                }
            ],
        },
    }


def service_monitor(target: Target) -> dict[str, Any]:
    """A ``ServiceMonitor`` scraping the ``metrics`` port of ``service(target)``."""
    return {
        "apiVersion": _API,
        "kind": "ServiceMonitor",
        "metadata": target.metadata(f"{target.app}-obs"),
        "spec": {
            "selector": {
                "matchLabels": {
                    "app.kubernetes.io/name": target.app,
                    "app.kubernetes.io/part-of": "obs-middleware",
                }
            },
            # Prometheus' job label is then the app's name (by default it is the Service's).
            "jobLabel": "app.kubernetes.io/name",
            "namespaceSelector": {"matchNames": [target.namespace]},
            "endpoints": [{"port": "metrics", "path": target.path, "interval": target.interval}],
        },
    }


def manifests(target: Target, *, with_service: bool = True) -> list[dict[str, Any]]:
    """The Service (unless ``with_service`` is false), ServiceMonitor and PrometheusRule."""
    objects = [service(target)] if with_service else []
    return [*objects, service_monitor(target), prometheus_rule(target)]


def render(target: Target | None = None, *, with_service: bool = True) -> str:
    """The manifests as one multi-document YAML text."""
    docs = manifests(target or Target(), with_service=with_service)
    header = (
        "# obs-middleware for prometheus-operator: generated by `obs assets k8s` from the shipped\n"
        "# alerts.yml (the PrometheusRule's groups are that file's). Runbooks: docs/RUNBOOKS.md.\n"
        "# The pods must serve /metrics on their own address, not loopback (the exporter's\n"
        "# default): OBS_EXPORTERS=prometheus:0.0.0.0:9464 (or OBS_PROMETHEUS_HOST=0.0.0.0), or\n"
        "# metrics_app() mounted in the app (then --port is the app's port). Several workers per\n"
        "# pod: set PROMETHEUS_MULTIPROC_DIR to a folder they share (an emptyDir).\n"
    )
    body: str = yaml.dump_all(
        docs, Dumper=_Dumper, sort_keys=False, width=100, explicit_start=True, allow_unicode=True
    )
    return header + body


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the rules' PromQL) as literal blocks, as alerts.yml writes them."""


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _text)
