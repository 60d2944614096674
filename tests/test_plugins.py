"""Methods and grids from outside the repository: the README's "Add your own method"
example, copied from the README into a temporary folder and run as a user would (one run,
a grid on two worker processes, a report), and entry points of an installed package."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
FAST = ["--profile", "smoke", "--set", "train.epochs=2", "--device", "cpu", "--threads", "1"]


def readme_example() -> str:
    section = (ROOT / "README.md").read_text().split("## Add your own method", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


def sslbench(*args: str, cwd: Path, env: dict[str, str] | None = None
             ) -> subprocess.CompletedProcess:
    # Run from the temporary folder, as a user's project would: nothing of the repository
    # is on the path but the installed package.
    return subprocess.run([sys.executable, "-m", "sslbench.bench.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


@pytest.fixture()
def plugin(tmp_path: Path) -> Path:
    path = tmp_path / "project" / "my_method.py"
    path.parent.mkdir()
    path.write_text(readme_example())
    return path


def test_the_readme_example_runs_ablates_and_reports_from_outside(plugin, data_root):
    where, root = plugin.parent, ["--root", str(data_root)]
    listed = sslbench("run", "--plugin", str(plugin), "--help", cwd=where)
    assert re.search(r"^  sharp_pi +Pi-model with a sharpened", listed.stdout, re.MULTILINE)

    # One run at two temperatures: the knob reaches the loss (and the run id).
    records = []
    for temperature in ("0.5", "1.0"):
        out = where / f"t{temperature}.json"
        result = sslbench("--plugin", "my_method.py", "run", "--method", "sharp_pi", *FAST,
                          *root, "--set", f"method.temperature={temperature}",
                          "--out", str(out), cwd=where)
        assert result.returncode == 0, result.stderr
        records.append(json.loads(out.read_text()))
    sharp, flat = records
    assert sharp["config"]["method"]["temperature"] == 0.5 and sharp["method"] == "sharp_pi"
    assert sharp["run_id"] != flat["run_id"]
    assert sharp["curves"]["unsupervised_loss"] != flat["curves"]["unsupervised_loss"]
    assert sharp["config"]["method"]["w_max"] == 100.0  # the method's own default

    bad = sslbench("run", "--plugin", "my_method.py", "--method", "sharp_pi", *FAST, *root,
                   "--set", "method.temperature=0", cwd=where)
    assert bad.returncode == 2
    assert bad.stderr.strip() == "error: method.temperature must be > 0, got 0.0"

    # The grid, on two spawned workers: they load the plugin from the environment.
    store = f"sqlite:///{where / 'runs.db'}"
    ablate = sslbench("ablate", "--plugin", "my_method.py", "--grid", "sharp_pi", *FAST, *root,
                      "--seeds", "2", "--workers", "2", "--storage", store, cwd=where)
    assert ablate.returncode == 0, ablate.stderr
    report = sslbench("report", "--plugin", "my_method.py", "--grid", "sharp_pi", "--profile",
                      "smoke", "--storage", store, "--out", str(where / "report"), cwd=where)
    assert report.returncode == 0, report.stderr
    markdown = (where / "report" / "report.md").read_text()
    assert "sharp_t1" in markdown and "sharp" in markdown and "pi_model" in markdown
    runs = (where / "report" / "runs.csv").read_text().splitlines()
    assert len(runs) == 1 + 3 * 2  # three variants, two seeds, all finished

    # Without the plugin, the store's cells are still there and the error says what to do.
    missing = sslbench("report", "--grid", "sharp_pi", "--profile", "smoke", "--storage",
                       store, "--out", str(where / "r2"), cwd=where)
    assert missing.returncode == 2 and "unknown grid 'sharp_pi'" in missing.stderr


def test_an_installed_entry_point_registers_without_any_flag(tmp_path):
    """A distribution on the path with an `sslbench.methods` entry point (what `pip install`
    of a user's package leaves behind) is loaded by every command."""
    site = tmp_path / "site"
    package = site / "mypkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "my_method.py").write_text(readme_example())
    info = site / "mypkg-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mypkg\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent("""\
        [sslbench.methods]
        sharp_pi = mypkg.my_method
        """))
    env = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    listed = sslbench("ablate", "--help", cwd=tmp_path, env=env)
    assert listed.returncode == 0, listed.stderr
    assert re.search(r"^  sharp_pi +does a sharpened", listed.stdout, re.MULTILINE)


def test_a_broken_plugin_is_one_line_and_runs_nothing(tmp_path):
    (tmp_path / "broken.py").write_text("raise RuntimeError('no GPU here')\n")
    for args in (["run", "--plugin", "broken.py", "--method", "x"],
                 ["--plugin", "missing.py", "run", "--method", "x"],
                 ["ablate", "--plugin", "no_such_module", "--list"]):
        result = sslbench(*args, cwd=tmp_path)
        assert result.returncode == 2, args
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert "RuntimeError: no GPU here" in sslbench(
        "run", "--plugin", "broken.py", "--method", "x", cwd=tmp_path).stderr


# -- datasets and networks from outside: the README's "Add your own dataset" / "network" ------


def readme_block(section: str) -> str:
    text = (ROOT / "README.md").read_text().split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", text, re.DOTALL).group(1)


def write_digits_csv(data_root: Path, where: Path, train: int = 2000, test: int = 1000) -> None:
    """MNIST's first images in the CSV layout the README's reader reads."""
    from sslbench.bench.core.datasets import MNIST, load_raw

    x_train, y_train, x_test, y_test = load_raw(data_root, MNIST)
    folder = where / "digits_csv"
    folder.mkdir(parents=True)
    for split, x, y, n in (("train", x_train, y_train, train), ("test", x_test, y_test, test)):
        rows = torch.cat([y[:n, None], x[:n].flatten(1).long()], dim=1).numpy()
        header = ",".join(["label", *(f"pixel{i}" for i in range(784))])
        np.savetxt(folder / f"{split}.csv", rows, fmt="%d", delimiter=",", header=header,
                   comments="")


@pytest.fixture()
def own_project(tmp_path: Path, data_root: Path) -> Path:
    where = tmp_path / "project"
    where.mkdir()
    (where / "digits_csv.py").write_text(readme_block("Add your own dataset"))
    (where / "mlp.py").write_text(readme_block("Add your own network"))
    write_digits_csv(data_root, where / "data")
    return where


def test_the_readme_dataset_reads_csv_digits_as_mnist_itself(own_project, data_root):
    """The same images through the plugin's reader train exactly as MNIST's own files do."""
    where, own = own_project, ["--root", str(own_project / "data")]
    listed = sslbench("data", "--plugin", "digits_csv.py", "--help", cwd=where)
    assert re.search(r"^  digits_csv +1 classes|^  digits_csv +10 classes", listed.stdout,
                     re.MULTILINE), listed.stdout
    records = {}
    for name, args in (("csv", ["--plugin", "digits_csv.py", "--set",
                                "data.dataset=digits_csv", *own]),
                       ("mnist", ["--root", str(data_root)])):
        out = where / f"{name}.json"
        result = sslbench("run", "--method", "temporal_ensembling", *FAST, *args,
                          "--out", str(out), cwd=where)
        assert result.returncode == 0, result.stderr
        records[name] = json.loads(out.read_text())
    csv, mnist = records["csv"], records["mnist"]
    assert csv["config"]["data"]["dataset"] == "digits_csv" and csv["run_id"] != mnist["run_id"]
    assert csv["labeled_indices"] == mnist["labeled_indices"]
    for key in ("supervised_loss", "unsupervised_loss", "test_accuracy"):
        assert csv["curves"][key] == mnist["curves"][key], key

    flipped = sslbench("run", "--plugin", "digits_csv.py", "--method", "pi_model", *FAST, *own,
                       "--set", "data.dataset=digits_csv", "--set", "data.hflip=true",
                       cwd=where)
    assert flipped.returncode == 2
    assert flipped.stderr.strip() == ("error: data.hflip: a horizontal flip does not suit "
                                      "digits_csv (a mirrored digit is not that digit); "
                                      "leave it off")
    empty = where / "empty"
    empty.mkdir()
    missing = sslbench("run", "--plugin", "digits_csv.py", "--method", "pi_model", *FAST,
                       "--root", str(empty), "--set", "data.dataset=digits_csv", cwd=where)
    assert missing.returncode == 2
    errors = [line for line in missing.stderr.splitlines() if line.startswith("error")]
    assert errors == [missing.stderr.strip().splitlines()[-1]], missing.stderr
    assert errors[0].startswith(f"error: dataset digits_csv could not be read from {empty}: ")


def test_the_readme_network_and_dataset_run_ablate_and_report_from_outside(own_project):
    where, own = own_project, ["--root", str(own_project / "data")]
    plugins = ["--plugin", "digits_csv.py", "--plugin", "mlp.py"]
    outs = {}
    for name in ("mlp", "cnn"):
        out = where / f"{name}.json"
        result = sslbench("run", *plugins, "--method", "temporal_ensembling", *FAST, *own,
                          "--set", "data.dataset=digits_csv", "--set", f"model.name={name}",
                          "--out", str(out), cwd=where)
        assert result.returncode == 0, result.stderr
        outs[name] = json.loads(out.read_text())
    assert outs["mlp"]["config"]["model"]["name"] == "mlp"
    assert outs["mlp"]["curves"]["supervised_loss"] != outs["cnn"]["curves"]["supervised_loss"]
    assert outs["mlp"]["curves"]["test_accuracy"][-1] > 0.3  # it learns: chance is 0.1

    store = f"sqlite:///{where / 'runs.db'}"
    ablate = sslbench("ablate", *plugins, "--grid", "mnist100", "--variants", "control",
                      "pixelwise", *FAST, *own, "--set", "data.dataset=digits_csv", "--set",
                      "model.name=mlp", "--seeds", "2", "--workers", "2", "--storage", store,
                      cwd=where)
    assert ablate.returncode == 0, ablate.stderr
    report = sslbench("report", *plugins, "--grid", "mnist100", "--profile", "smoke",
                      "--storage", store, "--out", str(where / "report"), cwd=where)
    assert report.returncode == 0, report.stderr
    runs = (where / "report" / "runs.csv").read_text().splitlines()
    assert len(runs) == 1 + 2 * 2
    assert "pixelwise" in (where / "report" / "report.md").read_text()

    unknown = sslbench("run", "--method", "pi_model", *FAST, "--set", "model.name=resnet",
                       cwd=where)
    assert unknown.returncode == 2
    assert unknown.stderr.strip() == ("error: unknown model 'resnet'; choose one of: cnn, "
                                      "conv_large (or load the plugin that registers it: "
                                      "--plugin)")
