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
STUDY=cpu-study
SEEDS=${SEEDS:-"0,1,2"}
. grids/study-lib.sh

# 1-2. The very teacher every run distils from, and the runs already committed, which count
#    as done (copied into the run store where it has none of its own, never over a run there).
prepare_study
# 3. The grid, its completed runs exported to reports/cpu-study/runs every 5 minutes and at
#    the end (records only: no checkpoints), so a study cut short keeps its finished runs.
sweep_exporting --seeds "$SEEDS" --workers "$WORKERS" ||
  echo "cpu-study: not every cell completed (listed above); the report covers the completed ones" >&2
# 4. The findings' numbers and the report from the exported records alone; the Table 4
#    ablations are in the tables, not in the overview figures.
python benchmarks/study_numbers.py reports/cpu-study/runs --teacher reports/cpu-study/teachers/resnet32.json \
  --out reports/cpu-study/numbers.md
dfkd-bench report --results reports/cpu-study/runs --out reports/cpu-study --baseline fast-fast2-cpu \
  --preamble reports/cpu-study/findings.md \
  --figure-exclude no-ps-cpu,no-difficulty-cpu,no-diversity-cpu,no-balance-cpu,none-cpu,only-difficulty-cpu,only-diversity-cpu \
  --compare ssdkd:cpu,fast2-cpu --compare fast10-cpu,fast2-cpu --compare dda-cpu,dda-no-aug-cpu
