"""Run in a fresh interpreter by test_conformance.py: patch one integration in one order, report.

``python _patch_probe.py NAME ORDER PRELOAD_JSON`` prints one JSON object. ORDER is
``patch-first`` (``instrument_all`` before the library is imported: the registry's post-import
hook patches it) or ``import-first`` (the modules in PRELOAD_JSON imported before). Then, in the
same process: patch again (must change nothing), unpatch twice (must restore everything), patch
again (must patch the same targets).
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
import types
from typing import Any


def main(name: str, order: str, preload: list[str]) -> dict[str, Any]:
    import obs_middleware as obs  # noqa: PLC0415 - timed after the interpreter starts
    from obs_middleware._core.patches import Patches  # noqa: PLC0415
    from obs_middleware.integrations._registry import lookup  # noqa: PLC0415

    row = lookup(name)
    out: dict[str, Any] = {"trigger_imported": row.module in sys.modules}
    factory = logging.getLogRecordFactory()
    if order == "import-first":
        for module_name in preload:
            importlib.import_module(module_name)
    out["status"] = [o.status for o in obs.instrument_all(only=[name])]
    if order == "patch-first":
        importlib.import_module(row.module)  # the registry's post-import hook patches here
    module = sys.modules[row.home]
    patches = [v for v in vars(module).values() if isinstance(v, Patches)]
    out["waited_for"] = sorted({m for p in patches for m in p.waiting})
    for module_name in out["waited_for"]:  # lazily imported SDK modules: patched on import
        importlib.import_module(module_name)

    def where(owner: Any) -> str:
        if isinstance(owner, types.ModuleType):
            return owner.__name__
        return f"{owner.__module__}.{owner.__qualname__}"

    def applied() -> list[tuple[Any, str]]:
        return [target for p in patches for target in p.targets]

    def state() -> list[tuple[str, int]]:
        now = [(f"{where(o)}.{a}", id(vars(o).get(a))) for o, a in applied()]
        return sorted([*now, ("log record factory", id(logging.getLogRecordFactory()))])

    def targets() -> list[str]:
        return sorted(f"{where(o)}.{a}" for o, a in applied())

    out["patched"] = any(patches)
    out["targets"] = targets()
    owners = {o.__name__ if isinstance(o, types.ModuleType) else o.__module__ for o, _ in applied()}
    out["modules"] = sorted({row.module, *out["waited_for"], *owners})
    out["waiting_after_imports"] = sorted({m for p in patches for m in p.waiting})
    replaced = [(o, a, vars(o).get(a)) for o, a in applied()]
    once = state()
    module.patch()
    out["status_again"] = [o.status for o in obs.instrument_all(only=[name])]
    out["patch_twice_is_once"] = state() == once
    module.unpatch()
    module.unpatch()
    out["unpatched_clean"] = not any(patches) and applied() == []
    out["restored"] = all(vars(o).get(a) is not patched for o, a, patched in replaced)
    out["factory_restored"] = logging.getLogRecordFactory() is factory
    module.patch()
    for module_name in sorted({m for p in patches for m in p.waiting}):
        importlib.import_module(module_name)
    out["repatched_targets"] = targets()
    out["repatched"] = any(patches)
    module.unpatch()
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]))))
