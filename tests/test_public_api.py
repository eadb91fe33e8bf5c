"""The public face: complete, documented, and the only import path the README shows."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import obs_middleware as obs

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_public_name_is_importable_from_the_top_and_documented() -> None:
    undocumented = [n for n in obs.__all__ if not (getattr(obs, n).__doc__ or "").strip()]
    assert undocumented == []


def test_the_types_configure_takes_and_returns_are_public(configured: Callable[..., Any]) -> None:
    from obs_middleware import (  # noqa: F401, PLC0415 - the import is the test
        Config,
        Exporter,
        HttpOptions,
        Job,
        PipelineOptions,
        PricingOptions,
        RedactionOptions,
        Report,
        SamplingOptions,
    )

    assert isinstance(configured(exporters="none"), obs.Config)


def test_the_readme_shows_no_private_import_path() -> None:
    private = re.findall(r"obs_middleware(?:\.\w+)*\._\w+", README.read_text())
    assert private == []
