"""``scripts/allocation_study.py`` (a script, not a package module) loaded once for the tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]


def study_module() -> ModuleType:
    """The allocation study script as the module ``allocation_study`` (registered in ``sys.modules``
    before it runs: its dataclasses look their module up while the file executes)."""
    module = sys.modules.get("allocation_study")
    if module is None:
        spec = importlib.util.spec_from_file_location("allocation_study", REPO / "scripts" / "allocation_study.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["allocation_study"] = module
        spec.loader.exec_module(module)
    return module
