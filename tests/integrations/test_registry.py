"""The integration registry: report, idempotency, post-import hooks, version gate, uninstrument."""

from __future__ import annotations

import logging
import sys
import types
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import obs_middleware as obs
from obs_middleware.integrations import _registry
from obs_middleware.integrations._registry import Integration, Outcome, version_in_range


class FakeIntegration:
    """An integration module (``obs_middleware.integrations.<name>``) that counts its calls."""

    def __init__(self, name: str, fail: bool = False) -> None:
        self.name = name
        self.module = types.ModuleType(f"obs_middleware.integrations.{name}")
        self.module.supported = ""
        self.module.patch = self.patch
        self.module.unpatch = self.unpatch
        self.fail = fail
        self.patched = 0
        self.unpatched = 0

    def patch(self) -> None:
        if self.fail:
            raise RuntimeError("target moved")
        self.patched += 1

    def unpatch(self) -> None:
        self.unpatched += 1


@pytest.fixture
def register(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., FakeIntegration]]:
    """``register(module, distribution=None, supported="")`` adds a temporary integration."""
    names: list[str] = []

    def add(
        module: str, distribution: str | None = None, supported: str = "", fail: bool = False
    ) -> FakeIntegration:
        name = f"fake_{uuid.uuid4().hex[:8]}"
        fake = FakeIntegration(name, fail)
        monkeypatch.setitem(sys.modules, fake.module.__name__, fake.module)
        monkeypatch.setattr(
            _registry,
            "INTEGRATIONS",
            (*_registry.INTEGRATIONS, Integration(name, module, distribution, supported)),
        )
        names.append(name)
        return fake

    yield add
    _registry.uninstrument_all()
    for name in names:
        _registry._patched.discard(name)
        _registry._enabled.discard(name)


@pytest.fixture
def throwaway_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A module importable from ``tmp_path`` that nothing has imported yet."""
    name = f"obs_throwaway_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def only(report: _registry.Report, name: str) -> Outcome:
    (outcome,) = [o for o in report if o.name == name]
    return outcome


def test_imported_library_is_patched_and_reported(register: Callable[..., FakeIntegration]) -> None:
    fake = register("json")
    report = obs.instrument_all(only=[fake.name])
    assert list(report) == [Outcome(fake.name, "patched", sys.version.split()[0], "")]
    assert report.patched == [fake.name]
    assert fake.patched == 1
    assert fake.name in str(report)


def test_instrument_all_is_idempotent(register: Callable[..., FakeIntegration]) -> None:
    fake = register("json")
    obs.instrument_all(only=[fake.name])
    second = obs.instrument_all(only=[fake.name])
    assert only(second, fake.name).status == "already"
    assert second.patched == [fake.name]
    assert fake.patched == 1


def test_exclude_and_only_filter_integrations(register: Callable[..., FakeIntegration]) -> None:
    a, b = register("json"), register("json")
    report = obs.instrument_all(only=[a.name, b.name], exclude=[b.name])
    assert [o.name for o in report] == [a.name]
    assert (a.patched, b.patched) == (1, 0)


def test_library_not_installed_is_skipped(register: Callable[..., FakeIntegration]) -> None:
    fake = register("obs_no_such_library_xyz")
    outcome = only(obs.instrument_all(only=[fake.name]), fake.name)
    assert (outcome.status, outcome.reason) == ("skipped", "not installed")
    assert fake.patched == 0


def test_library_imported_later_is_patched_by_post_import_hook(
    register: Callable[..., FakeIntegration], throwaway_module: str
) -> None:
    fake = register(throwaway_module)
    outcome = only(obs.instrument_all(only=[fake.name]), fake.name)
    assert (outcome.status, outcome.reason) == ("pending", "patched when first imported")
    assert fake.patched == 0
    __import__(throwaway_module)
    assert fake.patched == 1
    again = only(obs.instrument_all(only=[fake.name]), fake.name)
    assert again.status == "already"


def test_uninstrument_disarms_pending_hooks(
    register: Callable[..., FakeIntegration], throwaway_module: str
) -> None:
    fake = register(throwaway_module)
    obs.instrument_all(only=[fake.name])
    obs.uninstrument_all()
    __import__(throwaway_module)
    assert fake.patched == 0


def test_version_outside_supported_range_is_skipped_with_one_warning(
    register: Callable[..., FakeIntegration], caplog: pytest.LogCaptureFixture
) -> None:
    fake = register("pytest", distribution="pytest", supported=">=1,<2")
    with caplog.at_level(logging.WARNING, logger="obs_middleware"):
        outcome = only(obs.instrument_all(only=[fake.name]), fake.name)
    assert outcome.status == "skipped"
    assert "outside the supported range >=1,<2" in outcome.reason
    assert fake.patched == 0
    warnings = [r for r in caplog.records if fake.name in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING


def test_failing_patch_is_reported_not_raised(
    register: Callable[..., FakeIntegration], caplog: pytest.LogCaptureFixture
) -> None:
    fake = register("json", fail=True)
    outcome = only(obs.instrument_all(only=[fake.name]), fake.name)
    assert (outcome.status, outcome.reason) == ("failed", "RuntimeError: target moved")
    assert obs.uninstrument_all() == []


def test_uninstrument_all_unpatches_in_reverse_order(
    register: Callable[..., FakeIntegration],
) -> None:
    a, b = register("json"), register("json")
    obs.instrument_all(only=[a.name, b.name])
    assert obs.uninstrument_all() == [b.name, a.name]
    assert (a.unpatched, b.unpatched) == (1, 1)
    assert obs.uninstrument_all() == []
    again = only(obs.instrument_all(only=[a.name]), a.name)
    assert again.status == "patched" and a.patched == 2


def test_logging_is_a_registered_integration() -> None:
    assert any(i.name == "logging" and i.module == "logging" for i in _registry.INTEGRATIONS)


@pytest.mark.parametrize(
    ("version", "spec", "ok"),
    [
        ("2.0.0", ">=2.0,<2.2", True),
        ("2.2", ">=2.0,<2.2", False),
        ("1.9.9", ">=2.0", False),
        ("2.1.0rc1", ">=2.0,<2.2", True),
        ("3.0.dev0", "<3", False),  # PEP 440: <V excludes pre-releases of V
        ("1.4", "==1.4.0", True),
        ("1.4", "!=1.4", False),
        ("1.5", ">1.4,<=1.5", True),
        ("0.1", "", True),
    ],
)
def test_version_in_range(version: str, spec: str, ok: bool) -> None:
    assert version_in_range(version, spec) is ok


def test_version_in_range_rejects_unknown_clause() -> None:
    with pytest.raises(ValueError):
        version_in_range("1.0", "~=1.0")
