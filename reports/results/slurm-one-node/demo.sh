#!/usr/bin/env bash
# The README's "On a Slurm cluster" commands on the one-node cluster of `.ci/slurm`, then a
# task cancelled mid-cell and the same command again; the transcript goes to stdout.
#
#   export SLURM_CONF=$(.ci/slurm start)
#   bash reports/results/slurm-one-node/demo.sh > reports/results/slurm-one-node/transcript.txt 2>&1
set -uo pipefail
SSLBENCH="${SSLBENCH:-.venv/bin/sslbench}"
SHARED=$(mktemp -d /tmp/sslbench-shared.XXXXXX)
STORE="journal:///$SHARED/runs.log"
show() { echo; echo "\$ $*" | sed "s|$SHARED|/shared/sslbench|g"; "$@" 2>&1 | sed "s|$SHARED|/shared/sslbench|g"; }
echo "# $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD), $(sinfo -h -o '%P %D node(s) %c CPUs' | head -n 1), $(sbatch --version)"

show "$SSLBENCH" ablate --grid mnist100 --profile smoke --seeds 2 --variants control pixelwise \
    --storage "$STORE" --launcher slurm --jobs 2 --wait --threads 1
show "$SSLBENCH" status --storage "$STORE" --grid mnist100
echo; echo "# cells per task (owner = host:pid of the task that ran it):"
.venv/bin/python - "$STORE" <<'PY' | sed "s|$SHARED|/shared/sslbench|g"
import sys
from sslbench.bench.store.names import grid_study_name
from sslbench.bench.store.runstore import RunStore
store = RunStore(sys.argv[1], read_only=True)
for run in store.cell_runs(store.find_study(grid_study_name("mnist100", "smoke"))):
    print(f"  {run.cell}: {run.state} on {run.owner}, "
          f"test acc {run.record['metrics']['final_test_accuracy']:.2%}")
PY

# One long cell, cancelled after its first checkpoint, then the same command again.
LONG=(ablate --grid mnist100 --profile smoke --variants control --seeds 1 --set train.epochs=14
      --storage "journal:///$SHARED/long.log" --launcher slurm --threads 1)
show "$SSLBENCH" "${LONG[@]}"
JOB=$(squeue -h -o %i | tail -n 1)
until ls "$SHARED"/long.log.checkpoints/*.pt >/dev/null 2>&1; do sleep 1; done
sleep 3
show scancel "$JOB"
while squeue -h -j "$JOB" 2>/dev/null | grep -q .; do sleep 1; done
show "$SSLBENCH" status --storage "journal:///$SHARED/long.log"
show ls "$SHARED/long.log.checkpoints"
show "$SSLBENCH" "${LONG[@]}" --wait
echo; echo "# the task's log after the resubmission:"
grep -h "resuming\|task on\|task ends\|epoch 14/14" "$SHARED"/long.log.jobs/*_0_log.err | tail -n 6 \
    | sed "s|$SHARED|/shared/sslbench|g"
echo; echo "# the cell's attempts and the finished record's segments:"
(.venv/bin/python - "journal:///$SHARED/long.log" <<'PY'
import sys
from sslbench.bench.store.names import grid_study_name
from sslbench.bench.store.runstore import RunStore
store = RunStore(sys.argv[1], read_only=True)
for run in store.cell_runs(store.find_study(grid_study_name("mnist100", "smoke"))):
    print(f"  attempt {run.number}: {run.state} {run.failure_kind or ''} {run.failure or ''}".rstrip())
    if run.record:
        for s in run.record["segments"]:
            print(f"    segment: epochs {s['from_epoch']}..{s.get('to_epoch')} at {s['commit'][:12]}")
PY
) | sed "s|$SHARED|/shared/sslbench|g"
rm -rf "$SHARED"
