"""The layering rule of the documented layout (docs/layout.md), checked on every import
(function-level imports included): a module imports only from its own layer or the layers
below."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Bottom to top: a module's layer is its folder's. Only the public API (bench/api.py), the
# facade that re-exports every layer for notebooks, sits at the top outside its folder's.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("methods", ("methods",)),           # the math of each method; nothing of the engine
    ("base", ("bench",)),                # bench/*.py: errors, files, plugins
    ("core", ("bench.core",)),           # one stack of runs in one process
    ("grids", ("ablations",)),           # declarative grids and search spaces
    ("store", ("bench.store",)),         # run stores, their settings, the work queue on them
    ("reports", ("reports",)),           # statistics, tables, figures, markdown: reads stores
    ("runs", ("bench.runs",)),           # many runs: runner, pool, searches, --until-decided
    ("measure", ("bench.measure", "bench.measure.gpucheck")),  # bench, roofline, GPU check
    ("cluster", ("bench.cluster",)),     # job arrays of runners through submitit (Slurm)
    ("tools", ("bench.cli", "bench.api")),  # the command and the public API
]
PACKAGES = ("methods", "bench", "ablations", "reports")
FACADES = {"bench.api": "tools"}


def modules() -> dict[str, Path]:
    """Every module of the project by its name under `sslbench.` (`bench.core.train`); a
    package by its folder's name (`bench.core`)."""
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[:2] == ("reports", "results"):
                continue  # the scripts of committed results, not part of the package
            if parts[-1] in ("__init__", "__main__"):
                parts = parts[:-1]
            found.setdefault(".".join(parts), path)
    return found


def layer_of(module: str) -> int:
    """The layer of the folder that holds `module` (a package's own folder)."""
    names = [name for name, _ in LAYERS]
    if module in FACADES:
        return names.index(FACADES[module])
    path = modules().get(module)
    if path is None:
        raise AssertionError(f"{module} is not a module of the project")
    folder = module if path.name in ("__init__.py", "__main__.py") else module.rpartition(".")[0]
    for index, (_, folders) in enumerate(LAYERS):
        if folder in folders:
            return index
    raise AssertionError(f"{module} lies in folder {folder}, which is in no layer: add the "
                         "folder to LAYERS and to docs/layout.md")


def test_every_module_lies_in_a_layer_folder():
    for module in modules():
        layer_of(module)


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
    known = modules()
    # `from sslbench.ablations import get_grid` names a function: its module is the package.
    return {n if n in known else n.rpartition(".")[0] for n in names
            if n.split(".")[0] in PACKAGES}


def test_the_project_is_imported_only_under_its_one_name():
    """`import bench` would load a second copy of a module beside `sslbench.bench` (two
    registries) and fails from a wheel, where only `sslbench.*` is installed."""
    bare = [f"{path.relative_to(ROOT)} imports {name}"
            for path in sorted(ROOT.glob("*/**/*.py"))
            if not {".venv", "build", ".nox"} & set(path.relative_to(ROOT).parts)
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


def test_the_documented_layout_shows_every_folder_and_module():
    """The layout page's tree (docs/layout.md) names each layer's folder with the layer, and
    every module."""
    page = (ROOT / "docs" / "layout.md").read_text()
    section = page.split("# Layout", 1)[1].split("\n## ", 1)[0]
    rows = [line.split() for line in section.splitlines() if line[:1] not in ("", " ")]
    shown = {row[0]: row[1] for row in rows if len(row) > 1 and row[0].endswith(("/", ".py"))}
    for name, folders in LAYERS:
        for folder in folders:
            if folder in FACADES:
                continue
            assert shown.get(folder.replace(".", "/") + "/") == name, (folder, name)
    for module, path in modules().items():  # methods/ and ablations/ grow one per method
        if module.startswith(("bench", "reports")) and path.stem not in ("__init__", "__main__"):
            assert module.rpartition(".")[2] in section, module
