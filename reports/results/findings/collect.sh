#!/bin/bash
# Bring the long runs' stores into the repository and rebuild what is built from them.
#
#   bash reports/results/findings/collect.sh [LONGSTORE]     (from the repository root)
#
# LONGSTORE (default /work/longstore) holds the stores the long runs write, outside this
# tree, so that a commit never races a writer: quick.db (+ quick.db.checkpoints/) and
# paper.log (+ paper.checkpoints/). The SQLite store is copied with SQLite's online backup
# (a consistent snapshot while a runner writes); the journal up to its last whole line.
# Checkpoints of unfinished cells are copied beside each store, so a later session resumes
# them (the results folders' READMEs give the commands). Then the two reports are rebuilt
# at δ = 2 points and the README's Findings regenerated.
set -euo pipefail
FROM=${1:-/work/longstore}
PY=${PYTHON:-.venv/bin/python}
QUICK=reports/results/mnist100-quick
PAPER=reports/results/mnist100-paper

"$PY" - "$FROM" "$QUICK" "$PAPER" <<'PYEOF'
import shutil, sqlite3, sys
from pathlib import Path
from sslbench.bench.store.journal import whole_lines
source, quick, paper = (Path(a) for a in sys.argv[1:])
with sqlite3.connect(source / "quick.db") as src, sqlite3.connect(quick / "store.db.new") as dst:
    src.backup(dst)
(quick / "store.db.new").replace(quick / "store.db")
data = (source / "paper.log").read_bytes()
(paper / "runs.log.new").write_bytes(whole_lines(data))
(paper / "runs.log.new").replace(paper / "runs.log")
for store, folder in ((source / "quick.db.checkpoints", quick / "checkpoints"),
                      (source / "paper.checkpoints", paper / "checkpoints")):
    shutil.rmtree(folder, ignore_errors=True)
    if store.is_dir() and any(store.glob("*.pt")):
        folder.mkdir()
        for pt in store.glob("*.pt"):
            shutil.copy2(pt, folder / pt.name)
PYEOF
S=.venv/bin/sslbench
$S report --grid mnist100 --profile quick --sesoi 2 \
    --storage sqlite:///$QUICK/store.db --out $QUICK
$S report --grid mnist100 --profile paper --sesoi 2 \
    --storage journal:///$PAPER/runs.log --out $PAPER
"$PY" reports/results/findings/findings.py > /dev/null
git status --short reports/results README.md
