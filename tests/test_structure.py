"""The house's shape, read from the imports (every ``import`` statement, deferred ones included).

Layers, bottom to top: the core; the components (extender, webhook, storage sync, fencing); the
tools that explain what the components would do (``locality``: it runs the extender's judge and
fencing's guards on a cluster, so it sits on them by design); devkit. A layer imports only layers
below it and itself: the core imports no component, components import one another only through
the core, nothing below locality imports it, the product imports no devkit, and no modules import
each other in a circle."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORE = "linstor_scheduler"
COMPONENTS = ("scheduler_extender", "storage_sync", "fencing", "admission")
TOOLS = ("locality",)  # above the components: they combine what the components decide
DEVKIT = "devkit"
PACKAGES = (CORE, *COMPONENTS, *TOOLS, DEVKIT)
KNOWN_STRAYS: set[tuple[str, str]] = set()  # none: components meet only in the core


def layer(package: str) -> int:
    return 0 if package == CORE else 1 if package in COMPONENTS else 2 if package in TOOLS else 3


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """Module -> the modules of ours it imports (``from . import x`` resolved to the module x)."""
    ours = {module_name(p) for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name in sorted(ours):
        path = ROOT / (name.replace(".", "/") + ".py")
        if not path.exists():
            path = ROOT / name.replace(".", "/") / "__init__.py"
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in ours else base for a in node.names]
            else:
                continue
            found |= {t for t in targets if t in ours and t != name}
        graph[name] = found
    return graph


def top(module: str) -> str:
    return module.split(".")[0]


def test_the_core_imports_no_component_and_the_product_no_devkit():
    for module, targets in imports().items():
        for target in targets:
            if top(module) == CORE:
                assert top(target) == CORE, f"the core's {module} imports {target}"
            if top(module) != DEVKIT:
                assert top(target) != DEVKIT, f"{module} (product) imports {target} (devkit)"


def test_every_package_of_ours_has_a_layer():
    # Not product: the tests, the benchmarks, and image/ (the image's build helpers and its tests).
    found = {p.name for p in ROOT.iterdir()
             if (p / "__init__.py").exists() and p.name not in ("tests", "bench", "image")}
    assert found == set(PACKAGES)


def test_every_import_points_down_or_within_its_package():
    for module, targets in imports().items():
        for target in targets:
            if top(target) != top(module):
                assert layer(top(target)) < layer(top(module)), f"{module} imports {target}: not a lower layer"


def test_components_meet_only_in_the_core():
    for module, targets in imports().items():
        for target in targets:
            if top(module) in COMPONENTS and top(target) in COMPONENTS and top(target) != top(module):
                assert (module, target) in KNOWN_STRAYS, f"{module} imports another component's {target}"


def test_no_import_circle():
    graph = imports()
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            raise AssertionError("import circle: " + " -> ".join([*path[path.index(module):], module]))
        if module in done:
            return
        for target in sorted(graph.get(module, ())):
            visit(target, [*path, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])


def _commands(monkeypatch, entry_points) -> set[str]:
    import argparse

    import linstor_scheduler.cli as cli

    monkeypatch.setattr(cli, "entry_points", lambda group: entry_points if group == cli.COMMANDS_GROUP else [])
    parser = cli.build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return set(action.choices)


def test_a_package_left_out_of_the_install_has_no_subcommands_and_nothing_else_breaks(monkeypatch):
    """As in the image, which does not carry devkit: its registration is skipped, the rest stands."""
    from importlib.metadata import EntryPoint

    group = "linstor_scheduler.commands"
    found = _commands(monkeypatch, [EntryPoint("extender", "scheduler_extender.cli:register", group),
                                    EntryPoint("demo", "devkit_not_installed.cli:register", group)])
    assert found == {"extender", "explain", "snapshot"}


def test_a_broken_component_is_an_error_not_a_missing_subcommand(monkeypatch):
    from importlib.metadata import EntryPoint

    import pytest

    group = "linstor_scheduler.commands"
    with pytest.raises(ModuleNotFoundError):  # the package is there, one of its imports is not
        _commands(monkeypatch, [EntryPoint("x", "scheduler_extender.no_such_module:register", group)])
    with pytest.raises(RuntimeError, match="reinstall"):
        _commands(monkeypatch, [])


def test_the_installed_entry_points_give_every_subcommand(monkeypatch):
    import linstor_scheduler.cli as cli

    found = _commands(monkeypatch, list(cli.entry_points(group=cli.COMMANDS_GROUP)))
    assert found == {"extender", "explain", "snapshot", "webhook", "sync-node", "sync-classes", "fencing", "demo",
                     "locality", "locality-exporter", "drill", "affinity", "affinity-sync"}
