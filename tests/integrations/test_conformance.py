"""Every integration in the registry has the same shape and patches the same way in any order.

The shape is the one ``integrations/_registry.py`` documents. The ordering matrix (dd-trace's
``PatchTestCase``) runs in fresh interpreters (``_patch_probe.py``): patch before the library is
imported (the registry's post-import hook patches it) and after; in each, patching twice changes
nothing, unpatching twice restores everything, and patching again patches the same targets.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from obs_middleware._core.patches import Patches
from obs_middleware.integrations._registry import INTEGRATIONS, Integration, version_in_range

PROBE = Path(__file__).with_name("_patch_probe.py")


def _installed(row: Integration) -> bool:
    if importlib.util.find_spec(row.module.partition(".")[0]) is None:
        return False
    try:
        return row.distribution is None or bool(importlib.metadata.version(row.distribution))
    except importlib.metadata.PackageNotFoundError:
        return False


ROWS = [
    pytest.param(
        row,
        id=row.name,
        marks=pytest.mark.skipif(not _installed(row), reason=f"{row.module} is not installed"),
    )
    for row in INTEGRATIONS
]


@functools.cache
def probe(name: str, order: str, preload: tuple[str, ...] = ()) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(PROBE), name, order, json.dumps(list(preload))],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def import_first(name: str) -> dict[str, Any]:
    """The library and every module the integration patches imported before ``patch()``."""
    return probe(name, "import-first", tuple(probe(name, "patch-first")["modules"]))


@pytest.mark.parametrize("row", ROWS)
def test_module_has_the_integration_shape(row: Integration) -> None:
    module = importlib.import_module(row.home)
    assert callable(module.patch) and callable(module.unpatch)
    assert {"patch", "unpatch"} <= set(module.__all__)
    assert any(isinstance(v, Patches) for v in vars(module).values())  # its bookkeeping


@pytest.mark.parametrize("row", ROWS)
def test_supported_is_the_registrys_requirement(row: Integration) -> None:
    module = importlib.import_module(row.home)
    if row.home.startswith("obs_middleware.integrations."):
        assert "supported" in module.__all__
        assert module.supported == row.requirement
    else:  # the middleware never imports the registry: no second copy of the range
        assert not hasattr(module, "supported")


@pytest.mark.parametrize("row", ROWS)
def test_installed_library_is_in_the_supported_range(row: Integration) -> None:
    distribution, spec = row.client or (row.distribution, row.supported)
    if distribution is None:
        pytest.skip("the stdlib: any version")
    assert version_in_range(importlib.metadata.version(distribution), spec)


@pytest.mark.parametrize("row", ROWS)
def test_patch_after_import_patches_at_once(row: Integration) -> None:
    seen = import_first(row.name)
    assert seen["status"] == ["patched"]
    assert seen["patched"] and seen["waited_for"] == []


@pytest.mark.parametrize("row", ROWS)
def test_patch_before_import_patches_the_same_targets_on_import(row: Integration) -> None:
    seen = probe(row.name, "patch-first")
    assert seen["status"] == ["patched" if seen["trigger_imported"] else "pending"]
    assert seen["patched"] and seen["waiting_after_imports"] == []
    assert seen["targets"] == import_first(row.name)["targets"]


@pytest.mark.parametrize("order", ["import-first", "patch-first"])
@pytest.mark.parametrize("row", ROWS)
def test_patch_twice_is_patch_once(row: Integration, order: str) -> None:
    seen = import_first(row.name) if order == "import-first" else probe(row.name, order)
    assert seen["patch_twice_is_once"]
    assert seen["status_again"] == ["already"]


@pytest.mark.parametrize("order", ["import-first", "patch-first"])
@pytest.mark.parametrize("row", ROWS)
def test_unpatch_twice_restores_everything(row: Integration, order: str) -> None:
    seen = import_first(row.name) if order == "import-first" else probe(row.name, order)
    assert seen["unpatched_clean"] and seen["restored"] and seen["factory_restored"]


@pytest.mark.parametrize("order", ["import-first", "patch-first"])
@pytest.mark.parametrize("row", ROWS)
def test_unpatch_then_patch_patches_the_same_targets(row: Integration, order: str) -> None:
    seen = import_first(row.name) if order == "import-first" else probe(row.name, order)
    assert seen["repatched"]
    assert seen["repatched_targets"] == seen["targets"]
