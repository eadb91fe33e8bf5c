"""The layer rules of docs/ARCHITECTURE.md, checked against every import in ``src/``."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "obs_middleware"

# layer (a module path prefix under obs_middleware) -> layers it may never import
# The core imports nothing of the package outside itself.
CORE_ONLY = "_core"
# layer (a module path prefix under obs_middleware) -> layers it may never import
NEVER: dict[str, tuple[str, ...]] = {
    "_record": ("_setup", "_pipeline", "_delivery", "exporters", "middleware", "integrations"),
    "_json": (
        "_setup",
        "_pipeline",
        "_delivery",
        "_spool",
        "exporters",
        "middleware",
        "integrations",
    ),
    "_spool": ("_setup", "_pipeline", "_delivery", "exporters", "middleware", "integrations"),
    "_delivery": ("_setup", "_pipeline", "exporters", "middleware", "integrations", "testing"),
    "_pipeline": ("_setup", "exporters", "middleware", "integrations", "testing", "cli"),
    "exporters": ("_setup", "__init__", "middleware", "integrations", "testing", "cli"),
    "logs": ("_setup", "_pipeline", "_delivery", "exporters", "middleware", "integrations"),
    "_log_events": ("_setup", "_pipeline", "_delivery", "exporters", "middleware", "integrations"),
    "middleware": ("exporters", "integrations", "testing", "cli", "dashboard"),
    "integrations": ("exporters", "middleware", "testing", "cli", "dashboard"),
}


_MODULES = {
    ".".join(p.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
    for p in SRC.rglob("*.py")
}


def _modules() -> Iterator[tuple[str, ast.Module]]:
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).with_suffix("")
        yield ".".join(rel.parts), ast.parse(path.read_text(), str(path))


def _imported(module: str, tree: ast.Module) -> Iterator[str]:
    """Every obs_middleware module ``module`` imports, as a dotted path under the package."""
    package = module.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = [*base, *(node.module.split(".") if node.module else [])]
            elif node.module and node.module.split(".")[0] == "obs_middleware":
                target = node.module.split(".")[1:]
            else:
                continue
            if node.module:
                yield ".".join(target)
            for alias in node.names:
                name = ".".join([*target, alias.name])
                # from .. import _setup: that module; from .. import __version__: the package face
                yield name if name in _MODULES else ".".join(target) or "__init__"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "obs_middleware":
                    yield ".".join(parts[1:]) or "__init__"


def _layer_of(module: str, layers: tuple[str, ...]) -> str | None:
    for layer in layers:
        if module == layer or module.startswith(layer + "."):
            return layer
    return None


@pytest.mark.parametrize("layer", sorted(NEVER))
def test_no_layer_imports_what_it_must_never(layer: str) -> None:
    broken = []
    for module, tree in _modules():
        if _layer_of(module, (layer,)) is None:
            continue
        for target in _imported(module, tree):
            hit = _layer_of(target, NEVER[layer])
            if hit is not None and _layer_of(target, (layer,)) is None:
                broken.append(f"{module} -> {target}")
    assert broken == []


def test_the_core_imports_nothing_outside_itself() -> None:
    broken = [
        f"{module} -> {target}"
        for module, tree in _modules()
        if _layer_of(module, (CORE_ONLY,))
        for target in _imported(module, tree)
        if not _layer_of(target, (CORE_ONLY,))
    ]
    assert broken == []


def test_no_module_but_setup_reads_a_setup_private() -> None:
    reads = []
    for module, tree in _modules():
        if module == "_setup":
            continue
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "_setup"
                and node.attr.startswith("_")
            ):
                reads.append(f"{module}: _setup.{node.attr}")
            if isinstance(node, ast.ImportFrom) and (node.module or "").endswith("_setup"):
                reads += [f"{module}: {a.name}" for a in node.names if a.name.startswith("_")]
    assert reads == []
