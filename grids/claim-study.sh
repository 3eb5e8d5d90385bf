#!/bin/sh
# The step-faithful claim study (issue 31), from the committed teacher to the report. Run it
# from the repository root with ../shared beside it, in the project's environment. Resumable:
# completed runs (those committed under reports/claim-study/runs included) are skipped, an
# interrupted one resumes from its last epoch. Two runs side by side, one thread each; every arm
# of a seed on one machine kind (see the report's environment line).
#
#   SEEDS=0 sh grids/claim-study.sh      # the pilot; then read the gates (reports/claim-study)
#   SEEDS=1,2 sh grids/claim-study.sh    # the remaining seeds
set -eu
STUDY=claim-study
SEEDS=${SEEDS:-"0"}
. grids/study-lib.sh

prepare_study
sweep_exporting --seeds "$SEEDS" --workers "$WORKERS" ||
  echo "claim-study: not every cell completed (listed above); the report covers the completed ones" >&2
dfkd-bench report --results reports/claim-study/runs --out reports/claim-study \
  --preamble reports/claim-study/findings.md --margin 2 \
  --claims grids/claim-study.yaml
