# Shell functions a study's script sources (grids/cpu-study.sh, grids/claim-study.sh): the
# teacher checked against its committed sha256 (imported if missing), the committed run
# records seeded into the run store (a fresh clone resumes a study instead of redoing it),
# and the sweep with its finished runs exported to the tracked tree every EXPORT_EVERY
# seconds, so a study cut short by a session's end keeps them. Set STUDY before sourcing
# (the name: grids/$STUDY.yaml, results/$STUDY, reports/$STUDY); SEEDS and WORKERS may be
# set in the environment.

GRID=grids/$STUDY.yaml
CACHE=results/$STUDY/cache
DATA=../shared/data/cifar10-jpg
TEACHER=reports/cpu-study/teachers/resnet32.pt  # the CPU study's committed teacher, for every study
WORKERS=${WORKERS:-2}

export_runs() { python benchmarks/export_runs.py "results/$STUDY/runs" "reports/$STUDY/runs"; }

prepare_study() {
  if ! dfkd-bench teachers verify --dataset cifar10 --arch resnet32 --data-root "$DATA" --cache-dir "$CACHE"; then
    dfkd-bench teachers import "$TEACHER" --dataset cifar10 --arch resnet32 --data-root "$DATA" \
      --cache-dir "$CACHE" --normalization dataset --force
  fi
  mkdir -p "results/$STUDY/runs"
  for run in "reports/$STUDY/runs"/*/; do
    [ -d "$run" ] || continue
    name=$(basename "$run")
    [ -e "results/$STUDY/runs/$name" ] || cp -r "$run" "results/$STUDY/runs/$name"
  done
}

sweep_exporting() {  # the sweep's own arguments
  ( while sleep "${EXPORT_EVERY:-300}"; do export_runs >/dev/null || true; done ) &
  exporter=$!
  trap 'kill "$exporter" 2>/dev/null || true' EXIT
  trap 'exit 130' INT TERM
  status=0
  dfkd-bench sweep "$GRID" "$@" || status=$?
  kill "$exporter" 2>/dev/null || true
  export_runs
  return "$status"
}
