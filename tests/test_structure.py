"""The house's shape, read from the imports (every ``import`` statement, deferred ones included).

Layers, bottom to top: the core; the components (extender, webhook, storage sync, fencing); the
tools that explain what the components would do (``locality``: it runs the extender's judge and
fencing's guards on a cluster, so it sits on them by design); devkit. A layer imports only layers
below it and itself: the core imports no component, components import one another only through
the core, nothing below locality imports it, the product imports no devkit, and no modules import
each other in a circle. Above the components (locality, devkit, the benchmarks) a component is its
face: the package itself, whose ``__init__.py`` exports what the layers above use
(``linstor_scheduler/face.py``), never one of its modules."""

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
BENCH = "bench"  # not a package: scripts run from the checkout, on every layer
ABOVE = (*TOOLS, DEVKIT, BENCH)  # they see a component only through its face
KNOWN_PRIVATE: set[tuple[str, str]] = set()  # none: what a layer above needs, the component exports


def layer(package: str) -> int:
    return 0 if package == CORE else 1 if package in COMPONENTS else 2 if package in TOOLS else 3


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def ours() -> set[str]:
    return {module_name(p) for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


def imported_by(path: Path, name: str, package: str, known: set[str]) -> set[str]:
    """The modules of ours (``known``) that the file at ``path`` (module ``name`` of ``package``) imports."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        found |= {t for t in targets if t in known and t != name}
    return found


def imports() -> dict[str, set[str]]:
    """Module -> the modules of ours it imports (``from . import x`` resolved to the module x)."""
    known = ours()
    graph: dict[str, set[str]] = {}
    for name in sorted(known):
        path = ROOT / (name.replace(".", "/") + ".py")
        if not path.exists():
            path = ROOT / name.replace(".", "/") / "__init__.py"
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        graph[name] = imported_by(path, name, package, known)
    return graph


def bench_imports() -> dict[str, set[str]]:
    """The same for the benchmark scripts (``bench.<script>``; what they import of each other is not ours)."""
    known = ours()
    return {f"{BENCH}.{p.stem}": imported_by(p, f"{BENCH}.{p.stem}", BENCH, known)
            for p in sorted((ROOT / BENCH).glob("*.py"))}


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


def test_the_layers_above_see_a_component_only_through_its_face():
    """locality, devkit and the benchmarks import a component as the package itself (``from
    scheduler_extender import snapshot_extender``), never one of its modules: a component may move
    its rooms around without the layers above noticing, and what they rely on is written in one place."""
    graph = {m: t for m, t in imports().items() if top(m) in ABOVE} | bench_imports()
    assert any(top(m) == BENCH for m in graph) and any(top(m) == DEVKIT for m in graph)
    for module, targets in graph.items():
        for target in targets:
            if top(target) in COMPONENTS and target != top(target):
                assert (module, target) in KNOWN_PRIVATE, (
                    f"{module} imports {target}, a module of {top(target)}: import it from the package "
                    f"(export it in {top(target)}/__init__.py)")


def test_a_face_names_what_its_modules_define_and_loads_none_of_them_until_asked():
    """Each component's face resolves, name by name, to what its module defines; importing the
    packages (as the CLI does at every start, to find the subcommands) imports none of their modules."""
    import importlib
    import subprocess
    import sys

    from linstor_scheduler.face import exports

    for component in COMPONENTS:
        package = importlib.import_module(component)
        for name, (module, attr) in exports(ROOT / component / "__init__.py").items():
            assert getattr(package, name) is getattr(importlib.import_module(module, component), attr)
        assert set(package.__all__) >= set(exports(ROOT / component / "__init__.py"))
    loaded = subprocess.run(
        [sys.executable, "-c", f"import sys; import {', '.join(COMPONENTS)}; "
         f"print(sorted(m for m in sys.modules if m.partition('.')[0] in {COMPONENTS!r} and '.' in m))"],
        capture_output=True, text=True, check=True, cwd=ROOT).stdout.strip()
    assert loaded == "[]"


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
