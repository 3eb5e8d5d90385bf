#!/bin/sh
# The CPU reference study (issue 17), from the committed teacher to the report. Run it from the
# repository root with ../shared beside it, in the project's environment. Resumable: run it
# again after any interruption and it goes on where it stopped (completed runs are skipped, an
# interrupted one resumes from its last epoch). Cells run in the grid's order, each entry's
# three seeds together, so a study cut short has whole rows (mean and spread, timed on one
# machine) of the headline comparison first. Two runs side by side, one thread each.
#
#   sh grids/cpu-study.sh              # everything
#   SEEDS="0" sh grids/cpu-study.sh    # one seed
set -eu
GRID=grids/cpu-study.yaml
CACHE=results/cpu-study/cache
DATA=../shared/data/cifar10-jpg
TEACHER=reports/cpu-study/teachers/resnet32.pt
SEEDS=${SEEDS:-"0,1,2"}
WORKERS=${WORKERS:-2}
# The records the report reads (no checkpoints) of every completed run, into the tracked tree.
export_runs() { python benchmarks/export_runs.py results/cpu-study/runs reports/cpu-study/runs; }

# 1. The very teacher every run distils from, checked against its committed sha256.
if ! dfkd-bench teachers verify --dataset cifar10 --arch resnet32 --data-root "$DATA" --cache-dir "$CACHE"; then
  dfkd-bench teachers import "$TEACHER" --dataset cifar10 --arch resnet32 --data-root "$DATA" \
    --cache-dir "$CACHE" --normalization dataset --force
fi
# 2. The runs already committed count as done: their records go into the run store where it
#    has none of its own (never over a run there), so a fresh clone resumes the study instead
#    of redoing it.
mkdir -p results/cpu-study/runs
for run in reports/cpu-study/runs/*/; do
  [ -d "$run" ] || continue
  name=$(basename "$run")
  [ -e "results/cpu-study/runs/$name" ] || cp -r "$run" "results/cpu-study/runs/$name"
done
# 3. The grid. Every EXPORT_EVERY seconds meanwhile, the runs completed so far are exported
#    (export_runs), so a study cut short by a session's end or a preemption keeps its
#    finished runs in the tracked tree even where results/ is lost with the machine.
EXPORT_EVERY=${EXPORT_EVERY:-300}
( while sleep "$EXPORT_EVERY"; do
    export_runs >/dev/null || true
  done ) &
exporter=$!
trap 'kill "$exporter" 2>/dev/null || true' EXIT
trap 'exit 130' INT TERM
dfkd-bench sweep "$GRID" --seeds "$SEEDS" --workers "$WORKERS"
kill "$exporter" 2>/dev/null || true
# 4. The records the report reads (no checkpoints), then the findings' numbers and the report from
#    them alone; the Table 4 ablations are in the tables, not in the overview figures.
export_runs
python benchmarks/study_numbers.py reports/cpu-study/runs --teacher reports/cpu-study/teachers/resnet32.json \
  --out reports/cpu-study/numbers.md
dfkd-bench report --results reports/cpu-study/runs --out reports/cpu-study --baseline fast-fast2-cpu \
  --preamble reports/cpu-study/findings.md \
  --figure-exclude no-ps-cpu,no-difficulty-cpu,no-diversity-cpu,no-balance-cpu,none-cpu,only-difficulty-cpu,only-diversity-cpu \
  --compare ssdkd:cpu,fast2-cpu --compare fast10-cpu,fast2-cpu --compare dda-cpu,dda-no-aug-cpu
