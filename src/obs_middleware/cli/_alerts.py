"""The shipped Prometheus alert rules as text, with their runbook links where the user keeps them.

Every alert of ``exporters/assets/prometheus/alerts.yml`` has a ``runbook_url`` annotation:
``docs/RUNBOOKS.md#<alert name in lower case>`` (``DEFAULT_RUNBOOK_BASE``, a path relative to
the repository). ``alerts_text(base)`` replaces the part before ``#``, leaving the anchors and the
file's comments as they are. Text only: no YAML library needed.
"""

from __future__ import annotations

from pathlib import Path

from ..exporters.tinybird import asset_path

__all__ = ["DEFAULT_RUNBOOK_BASE", "alerts_text"]

DEFAULT_RUNBOOK_BASE = "docs/RUNBOOKS.md"
_KEY = "runbook_url: "


def alerts_text(runbook_base: str | None = None) -> str:
    """The shipped alerts.yml, with its runbook links on ``runbook_base`` (None: the default)."""
    text = Path(asset_path("prometheus", "alerts.yml")).read_text(encoding="utf-8")
    if not runbook_base or runbook_base == DEFAULT_RUNBOOK_BASE:
        return text
    return text.replace(f"{_KEY}{DEFAULT_RUNBOOK_BASE}#", f"{_KEY}{runbook_base.rstrip('#')}#")
