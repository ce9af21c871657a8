"""One module per pass family; each runner class registers itself for its pass type. Every module
of this package is imported here, so a new module is all a new pass needs."""

from __future__ import annotations

import importlib
import pkgutil

from olivekube.runner.passes.base import PASSES, RunnerPass

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["PASSES", "RunnerPass"]
