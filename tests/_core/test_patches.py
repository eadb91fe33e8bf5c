"""Patch bookkeeping: wrap, re-bind, undo in reverse; lazy modules patched on import."""

from __future__ import annotations

import importlib
import logging
import sys
import types
from typing import Any

import pytest

from obs_middleware._core.patches import Patches, module_exists


def test_patches_wrap_set_and_undo(caplog: pytest.LogCaptureFixture) -> None:
    module = types.ModuleType("fake_sdk")

    class Client:
        def run(self) -> str:
            return "ran"

    module.Client = Client  # type: ignore[attr-defined]
    module.run = Client().run  # type: ignore[attr-defined]
    sys.modules["fake_sdk"] = module
    try:
        patches = Patches("fake")
        assert patches.wrap("fake_sdk", "Client.run", lambda w, i, a, k: "wrapped " + w(*a, **k))
        patches.set(module, "run", Client().run)
        with caplog.at_level(logging.WARNING, logger="obs_middleware"):
            assert not patches.wrap("fake_sdk", "Client.missing", lambda w, i, a, k: None)
        assert "fake_sdk.Client.missing not found" in caplog.text
        assert Client().run() == "wrapped ran"
        assert module.run() == "wrapped ran"  # type: ignore[attr-defined]
        patches.undo()
        assert Client().run() == "ran"
        assert not patches
    finally:
        del sys.modules["fake_sdk"]


def test_patches_of_a_module_not_imported_yet_wait_for_its_import(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    package = tmp_path / "lazy_sdk"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "res.py").write_text("class C:\n    def m(self):\n        return 'm'\n")
    (package / "other.py").write_text("class D:\n    def m(self):\n        return 'd'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module("lazy_sdk")  # the package is imported, its modules are not

    patches = Patches("lazy")
    try:
        assert patches.wrap("lazy_sdk.res", "C.m", lambda w, i, a, k: "patched " + w(*a, **k))
        assert patches.wrap("lazy_sdk.other", "D.m", lambda w, i, a, k: "patched")
        assert "lazy_sdk.res" not in sys.modules and patches
        c = importlib.import_module("lazy_sdk.res").C
        assert c().m() == "patched m"
        patches.undo()
        assert c().m() == "m"
        d = importlib.import_module("lazy_sdk.other").D
        assert d().m() == "d"  # undone before its import: the hook lapsed
        with caplog.at_level(logging.WARNING, logger="obs_middleware"):
            assert not patches.wrap("lazy_sdk.gone", "X.m", lambda w, i, a, k: None)
        assert "lazy_sdk.gone.X.m not found" in caplog.text
    finally:
        patches.undo()
        for name in [m for m in sys.modules if m.startswith("lazy_sdk")]:
            del sys.modules[name]


def test_on_undo_runs_with_the_other_patches_last_first() -> None:
    done: list[str] = []
    module = types.ModuleType("fake_sdk_order")
    module.value = "original"  # type: ignore[attr-defined]
    patches = Patches("order")
    patches.on_undo(lambda: done.append(f"first sees {module.value}"))  # type: ignore[attr-defined]
    patches.set(module, "value", "patched")
    assert patches and patches.targets == ((module, "value"),)
    patches.undo()
    assert done == ["first sees original"] and module.value == "original"  # type: ignore[attr-defined]
    assert not patches and patches.targets == ()


def test_waiting_lists_the_modules_whose_import_applies_patches(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "obs_waiting_sdk.py").write_text("class C:\n    def m(self):\n        return 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    patches = Patches("waiting")
    try:
        assert patches.wrap("obs_waiting_sdk", "C.m", lambda w, i, a, k: 2)
        assert patches.waiting == ("obs_waiting_sdk",) and patches.targets == ()
        module = importlib.import_module("obs_waiting_sdk")
        assert patches.waiting == () and patches.targets == ((module.C, "m"),)
    finally:
        patches.undo()
        sys.modules.pop("obs_waiting_sdk", None)


def test_module_exists_without_importing_it_or_its_packages(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "obs_loud_pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("raise RuntimeError('imported')\n")
    (package / "sub" / "__init__.py").write_text("raise RuntimeError('imported')\n")
    (package / "sub" / "leaf.py").write_text("raise RuntimeError('imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert module_exists("obs_loud_pkg")
    assert module_exists("obs_loud_pkg.sub.leaf")
    assert not module_exists("obs_loud_pkg.sub.missing")
    assert not module_exists("obs_loud_pkg.sub.leaf.deeper")
    assert not [m for m in sys.modules if m.startswith("obs_loud_pkg")]
    assert module_exists("json.decoder")  # a parent imported already: searched from there
    assert not module_exists("json.no_such_module")
    assert not module_exists("obs_no_such_package_xyz.sub")
