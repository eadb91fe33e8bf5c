"""docs/CONFIGURATION.md is what the code generates, and the code reads no variable it omits."""

from __future__ import annotations

import re
import warnings
from dataclasses import fields, is_dataclass
from pathlib import Path

from obs_middleware._core.config import SETTINGS, Config, from_env
from obs_middleware._core.variables import OTHER_VARIABLES, markdown

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "obs_middleware"
DOC = ROOT / "docs" / "CONFIGURATION.md"
# os.environ names in src/ that are not configuration: a test emulator sets the SDK's key.
NOT_CONFIGURATION = {"FAL_KEY"}


def _declared() -> set[str]:
    return {s.variable for s in SETTINGS if s.variable} | {v.name for v in OTHER_VARIABLES}


def test_configuration_md_is_what_the_code_generates() -> None:
    assert DOC.read_text() == markdown(), (
        "docs/CONFIGURATION.md is stale: "
        "python -m obs_middleware._core.variables > docs/CONFIGURATION.md"
    )


def test_every_option_of_configure_has_exactly_one_row() -> None:
    options = []
    for top in fields(Config):
        default = getattr(Config(), top.name)
        if is_dataclass(default):
            options += [f"{top.name}.{f.name}" for f in fields(default)]
        else:
            options.append(top.name)
    assert sorted(s.option for s in SETTINGS) == sorted(options)


def test_every_variable_of_a_setting_is_read_by_from_env() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for setting in SETTINGS:
            if setting.variable is not None:
                changed = from_env({setting.variable: _sample(setting.option)})
                assert changed != from_env({}), setting.variable


def _sample(option: str) -> str:
    """A valid value different from the default, by the option's type."""
    group, _, name = option.rpartition(".")
    default = getattr(getattr(Config(), group) if group else Config(), name)
    if isinstance(default, bool):
        return "off" if default else "on"
    if isinstance(default, (int, float)):
        return "0.5" if option == "sampling.ratio" else "600"
    if option == "logs":  # a level name
        return "warning"
    return "x-sample"


def test_every_variable_named_in_the_source_is_declared() -> None:
    named: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        found = set(re.findall(r"\bOBS_[A-Z0-9_]*[A-Z0-9]\b", text))
        found |= set(re.findall(r"os\.environ\.get\(\s*\"([A-Z0-9_]+)\"", text))
        for name in found - NOT_CONFIGURATION:
            named.setdefault(name, set()).add(str(path.relative_to(SRC)))
    missing = {n: sorted(p) for n, p in named.items() if n not in _declared()}
    assert missing == {}, "declare them in _core/variables.py (or config.SETTINGS)"


def test_every_declared_variable_is_read_where_the_table_says() -> None:
    for variable in OTHER_VARIABLES:
        assert variable.name in (SRC / variable.read_by).read_text(), variable.name
    config = (SRC / "_core" / "config.py").read_text()
    for setting in SETTINGS:
        if setting.variable:
            assert setting.variable in config, setting.variable
