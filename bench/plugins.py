"""Methods, grids, search spaces, datasets and models from outside the package.

Two ways in, both of which simply import code that calls the registries' decorators
(`sslbench.methods.register`, `sslbench.ablations.register_grid`, `register_space`,
`sslbench.bench.api.register_dataset`, `register_model`):
- Python entry points of an installed package, in the groups of ENTRY_POINT_GROUPS:
      [project.entry-points."sslbench.methods"]
      my_method = "my_package.my_method"
- `--plugin module_or_file.py` on any command, for a quick try without packaging.

A plugin loaded in the command is loaded in every worker process too: the specs travel in
the environment (PLUGINS_ENV), which spawned workers and child commands inherit.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path

from sslbench.bench.errors import UserError

ENTRY_POINT_GROUPS = ("sslbench.methods", "sslbench.grids", "sslbench.spaces",
                      "sslbench.datasets", "sslbench.models")
PLUGINS_ENV = "SSLBENCH_PLUGINS"  # os.pathsep-separated specs: module names or .py paths

_loaded: set[str] = set()


def _import_file(path: Path) -> None:
    # A name of its own per file (the same in every process: str hashes are salted), so
    # that two plugins named the same never collide, and registered in sys.modules first,
    # as an import would (dataclasses look it up there).
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
    name = f"sslbench_plugin_{digest}_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UserError(f"--plugin {path}: not a Python file; give a .py file or a module name")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise


def _load_one(spec: str) -> None:
    path = Path(spec).expanduser()
    if spec.endswith(".py") or path.is_file():
        if not path.is_file():
            raise UserError(f"--plugin {spec}: no such file; give a .py file or an importable "
                            f"module name")
        _import_file(path.resolve())
    else:
        try:
            importlib.import_module(spec)
        except ModuleNotFoundError as error:
            if error.name and spec.startswith(error.name):
                raise UserError(f"--plugin {spec}: no such module or file; give a .py file or "
                                f"a module importable here (is its folder on PYTHONPATH?)"
                                ) from None
            raise


def _canonical(spec: str) -> str:
    """A file as its absolute path (workers may start elsewhere), a module as its name."""
    path = Path(spec).expanduser()
    return str(path.resolve()) if spec.endswith(".py") or path.is_file() else spec


def load_plugins(specs: Sequence[str] = ()) -> list[str]:
    """Import the installed entry points, the specs in PLUGINS_ENV and `specs`, each once;
    add `specs` to PLUGINS_ENV for the worker processes. Returns what was newly loaded.

    A plugin that fails to import is a one-line UserError naming it (the traceback with
    --debug); nothing has run yet, so nothing is lost."""
    # Entry points by their module ("my_package.my_method" or "my_package.my_method:obj").
    wanted = [ep.value.partition(":")[0].strip()
              for group in ENTRY_POINT_GROUPS for ep in entry_points(group=group)]
    inherited = [s for s in os.environ.get(PLUGINS_ENV, "").split(os.pathsep) if s]
    given = [_canonical(s) for s in specs]
    loaded = []
    for spec in dict.fromkeys([*wanted, *inherited, *given]):
        if spec in _loaded:
            continue
        try:
            _load_one(spec)
        except UserError:
            raise
        except Exception as error:
            raise UserError(f"plugin {spec} failed to load: {type(error).__name__}: {error} "
                            f"(--debug shows where)") from error
        _loaded.add(spec)
        loaded.append(spec)
    os.environ[PLUGINS_ENV] = os.pathsep.join(dict.fromkeys([*inherited, *given]))
    return loaded
