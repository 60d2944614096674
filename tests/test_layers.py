"""The layering rule of the README's layout section, checked on every import (function-level
imports included): a module imports only from its own layer or the layers below."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Bottom to top. A module's layer is the first entry that names it or its package.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("methods", ("methods",)),
    ("core", ("bench.errors", "bench.config", "bench.datasets", "bench.data", "bench.model",
              "bench.seeds", "bench.precision", "bench.checkpoint", "bench.sampling",
              "bench.allocator", "bench.compiled", "bench.train", "bench.record",
              "bench.throughput", "bench.files", "bench.schema", "bench.plugins",
              "bench.graphed", "bench.archives", "bench.cost")),
    ("grids", ("ablations",)),
    ("orchestration", ("bench.store", "bench.journal", "bench.identity", "bench.queue",
                       "bench.pool", "bench.progress", "bench.runner", "bench.search")),
    ("reports", ("reports",)),
    ("tools", ("bench.cli", "bench.speed", "bench.naive", "bench.adaptive", "bench.api",
               "bench.gpucheck", "bench.roofline", "bench")),
]
PACKAGES = ("methods", "bench", "ablations", "reports")


def layer_of(module: str) -> int:
    for index, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return index
    raise AssertionError(f"{module} is in no layer: add it to LAYERS and the README")


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).glob("*.py"):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            found[name] = path
    return found


def raw_imports(path: Path) -> set[str]:
    """Every absolute module name imported by the file, as written."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            if node.module.removeprefix("sslbench.") in PACKAGES:
                # `from sslbench.bench import allocator` imports sslbench.bench.allocator
                names |= {f"{node.module}.{alias.name}" for alias in node.names}
                names.discard(node.module)
    return names


def imported(path: Path) -> set[str]:
    """The project's modules the file imports, by their folder names (`bench.config`)."""
    names = {n.removeprefix("sslbench.") for n in raw_imports(path) if n.startswith("sslbench.")}
    return {n for n in names if n.split(".")[0] in PACKAGES}


def test_the_project_is_imported_only_under_its_one_name():
    """`import bench` would load a second copy of a module beside `sslbench.bench` (two
    registries) and fails from a wheel, where only `sslbench.*` is installed."""
    bare = [f"{path.relative_to(ROOT)} imports {name}"
            for path in sorted(ROOT.glob("*/*.py")) if path.parts[-2] != ".venv"
            for name in sorted(raw_imports(path)) if name.split(".")[0] in PACKAGES]
    assert not bare, "\n".join(bare)


def test_every_import_goes_down_the_layers():
    upward = []
    for module, path in sorted(modules().items()):
        mine = layer_of(module)
        for name in sorted(imported(path)):
            if layer_of(name) > mine:
                upward.append(f"{module} ({LAYERS[mine][0]}) imports {name} "
                              f"({LAYERS[layer_of(name)][0]})")
    assert not upward, "\n".join(upward)


def test_the_method_layer_imports_nothing_of_the_engine():
    for module, path in modules().items():
        if module.startswith("methods"):
            assert all(n.startswith("methods") for n in imported(path)), module


def test_the_readme_layout_names_every_layer():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    for name, prefixes in LAYERS:
        assert f"**{name}**" in section, name
        for prefix in prefixes:  # a module by its name, a package by its folder
            named = f"`{prefix.split('.')[1]}`" if "." in prefix else f"`{prefix}/`"
            assert named in section, prefix
