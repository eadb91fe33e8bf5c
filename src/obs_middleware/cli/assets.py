"""``obs assets``: print the shipped Grafana dashboard, alert rules or Kubernetes manifests.

- ``obs assets grafana``: the dashboard JSON (import it in Grafana, or provision it);
- ``obs assets alerts [--runbook-base URL]``: the Prometheus alert rules (``rule_files``);
- ``obs assets k8s [--app --namespace --port --label k=v … --runbook-base URL]``: a Service, a
  ServiceMonitor and a PrometheusRule (the same rules) for prometheus-operator; needs PyYAML.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

from ..exporters.tinybird import asset_path
from ._alerts import DEFAULT_RUNBOOK_BASE, alerts_text

__all__ = ["add_parser", "run"]

_KINDS = ("grafana", "alerts", "k8s")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``assets`` and its options to the ``obs`` parser."""
    p = sub.add_parser(
        "assets", help="print the Grafana dashboard, alert rules or Kubernetes manifests"
    )
    p.add_argument("kind", choices=_KINDS, help="grafana (JSON), alerts or k8s (YAML)")
    p.add_argument(
        "--runbook-base",
        default=None,
        help="URL of your copy of docs/RUNBOOKS.md: the alerts' runbook_url links become "
        "URL#<alert> (default: docs/RUNBOOKS.md, relative to the repository)",
    )
    p.add_argument("--app", default="my-service", help="k8s: the pods' app.kubernetes.io/name")
    p.add_argument("--namespace", default="default", help="k8s: namespace of the objects")
    p.add_argument("--port", type=int, default=9464, help="k8s: the pods' metrics port (9464)")
    p.add_argument("--path", default="/metrics", help="k8s: the metrics path (/metrics)")
    p.add_argument("--interval", default="30s", help="k8s: scrape interval (30s)")
    p.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="k8s: a label on every object, e.g. release=kube-prometheus-stack (repeatable)",
    )
    p.add_argument(
        "--no-service", action="store_true", help="k8s: leave out the Service (you have one)"
    )


def run(args: argparse.Namespace) -> int:
    """``obs assets KIND``: returns the exit code."""
    if args.kind == "grafana":
        sys.stdout.write(Path(asset_path("grafana", "obs-middleware.json")).read_text("utf-8"))
        return 0
    if args.kind == "alerts":
        sys.stdout.write(alerts_text(args.runbook_base))
        return 0
    return _k8s(args)


def _k8s(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("yaml") is None:
        print(
            "obs assets k8s needs PyYAML, not installed here: "
            "pip install 'obs-middleware[kubernetes]'",
            file=sys.stderr,
        )
        return 1
    from ._k8s import Target, render  # noqa: PLC0415 - imports PyYAML

    labels: dict[str, str] = {}
    for item in args.label:
        key, sep, value = item.partition("=")
        if not sep or not key:
            print(f"obs assets k8s: --label wants KEY=VALUE, got {item!r}", file=sys.stderr)
            return 2
        labels[key] = value
    target = Target(
        app=args.app,
        namespace=args.namespace,
        port=args.port,
        path=args.path,
        interval=args.interval,
        labels=labels,
        runbook_base=args.runbook_base or DEFAULT_RUNBOOK_BASE,
    )
    sys.stdout.write(render(target, with_service=not args.no_service))
    return 0
