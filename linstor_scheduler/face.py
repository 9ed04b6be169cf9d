"""A component's public face: what the layers above it (``locality``, ``devkit``, ``bench``) import from
the package itself (``from scheduler_extender import snapshot_extender``), never from its modules.

A component's ``__init__.py`` writes its face as ordinary imports from its own modules under
``if TYPE_CHECKING:`` and ends with ``__getattr__, __dir__, __all__ = face(__name__, __file__)``: those
names, and only those, are the package's, each imported from its module when first asked for. Not at
once: every subcommand's start imports every component's package (the CLI finds each ``register``
through the entry points), and ``--help`` must not pay for FastAPI, uvicorn or the kubernetes client.
The same import statements are what type checkers and readers see, and what tests/test_structure.py
reads: the face's arrows are in the house's picture, and the layers above are held to the faces.
"""

from __future__ import annotations

import ast
import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def exports(init_file: str | Path) -> dict[str, tuple[str, str]]:
    """The face of the package whose ``__init__.py`` this is: exported name -> (its module, relative to
    the package, and its name there), from the relative imports under ``if TYPE_CHECKING:``."""
    found: dict[str, tuple[str, str]] = {}
    for node in ast.parse(Path(init_file).read_text()).body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for stmt in node.body:
                if isinstance(stmt, ast.ImportFrom) and stmt.level == 1 and stmt.module:
                    for alias in stmt.names:
                        found[alias.asname or alias.name] = ("." + stmt.module, alias.name)
    return found


def face(package: str, init_file: str) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """The package's ``__getattr__``, ``__dir__`` and ``__all__`` for the face its ``__init__.py`` writes."""
    names = exports(init_file)

    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, attr = names[name]
        value = getattr(importlib.import_module(module, package), attr)
        setattr(sys.modules[package], name, value)  # the next use is a plain attribute
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *names})

    return __getattr__, __dir__, sorted(names)
