"""Package exports that import their module only when a name is first used.

``import stylize`` and the command line's start-up must not pay for torch (2-3 s) before a command needs it, so each
package's ``__init__`` names what it exports and where it lives, and the module is imported on first access.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, modules: dict[str, list[str]]) -> tuple[Callable[[str], Any], list[str]]:
    """A module ``__getattr__`` and ``__all__`` for ``package``, exporting each name of ``modules[MODULE]`` from
    ``package.MODULE``.

    >>> __getattr__, __all__ = lazy_exports(__name__, {"routing": ["Engine"]})
    """
    locations = {name: module for module, names in modules.items() for name in names}

    def __getattr__(name: str) -> Any:
        if name not in locations:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{locations[name]}"), name)

    return __getattr__, sorted(locations)
