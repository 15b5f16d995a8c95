#!/usr/bin/env bash
# `make demo`: the whole pipeline on its embedded defaults, on one machine, in a few minutes of CPU.
#   run-all --profile smoke   all 16 rows: train -> eval -> eval ms+flip -> bench (synthetic datasets
#                             in each dataset's real layout are written on first use), the training
#                             guard watching each run against its row's smoke reference log
#   collect -> tables (README.md, and metafile.yaml in MMSeg's model-index layout) -> plots (with the
#   curve overlays) -> curves (verdicts per row) -> compare --curves (against the committed smoke
#   baseline and reference logs) -> report (static HTML: RESULTS/report/index.html)
# Environment: NLBENCH_DEMO_RESULTS (default results/demo-run, which git ignores: the demo leaves the
# checkout as it was), NLBENCH_DEMO_README (default: none; `make examples` sets README.md, and the tables
# are then written between its nlbench:tables markers too).
set -euo pipefail
cd "$(dirname "$0")/.."

# Idle OpenMP threads sleep instead of spinning: the same numbers (the same threads do the same work),
# and far less time lost when other processes share the cores.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"

results="${NLBENCH_DEMO_RESULTS:-results/demo-run}"
readme="${NLBENCH_DEMO_README:-}"
start=$(date +%s)

step() { printf '\n== %s\n' "$*"; }

step "run-all: 16 rows, smoke profile, local launcher, guard against results/reference/logs/smoke/ -> $results"
# Two jobs at a time, each in its own process on one thread (the smoke profile's runtime.cpu_threads):
# the same numbers as one after the other, in about half the time on 2 cores.
nlbench run-all --profile smoke --launcher local --parallel 2 --results "$results" --set guard.reference=released

# Quiet by default: the per-row texts of collect, curves and plots go to files under the results folder
# (the verdicts of every row come with compare); here, one line each.
step "collect -> $results/summary.csv"
nlbench collect --results "$results" | tail -n 1

if [ -n "$readme" ]; then
  step "tables -> $readme and $results/tables.md"
  nlbench tables --results "$results" --readme "$readme"
else
  step "tables -> $results/tables.md"
  nlbench tables --results "$results" --no-readme
fi

step "tables --metafile -> $results/metafile.yaml (MMSegmentation's model-index layout)"
nlbench tables --results "$results" --metafile "$results/metafile.yaml"

# The plots and the HTML report draw their figures with matplotlib, one core each: the plots are
# drawn in the background while curves, compare and the report run, and their output follows.
step "plots -> $results/plots (in the background; its output follows the report's)"
plots_log="$results/plots.log"
nlbench plots --results "$results" > "$plots_log" 2>&1 &
plots_pid=$!

step "curves: every row's training curves against its smoke reference log (results/reference/logs/smoke/)"
curves=0
nlbench curves '*' --profile smoke --results "$results" --json "$results/curves.json" > "$results/curves.txt" \
  || curves=$?
echo "curves: each row's checks in $results/curves.txt (exit status $curves); compare --curves below lists the verdicts"

step "compare --curves against the smoke baseline results/reference/smoke.csv (smoke results are never compared with the published numbers)"
status=0
nlbench compare --results "$results" --curves --report "$results/compare.md" --junit "$results/compare.xml" \
  || status=$?

step "report -> $results/report (static HTML, no server)"
nlbench report --results "$results" --out "$results/report"

step "plots (drawn in the background) -> $results/plots"
plots=0
wait "$plots_pid" || plots=$?
[ "$plots" -eq 0 ] || { cat "$plots_log" >&2; echo "plots failed (exit status $plots)" >&2; exit "$plots"; }
tail -n 1 "$plots_log"

elapsed=$(( $(date +%s) - start ))
cat <<EOF

== done in ${elapsed} s
tables:  $results/tables.md${readme:+ and $readme (between the nlbench:tables markers)}
plots:   $results/plots/ (PNG and SVG)
curves:  $results/curves.txt, $results/curves.json (exit status $curves)
compare: $results/compare.md, $results/compare.xml (exit status $status)
metafile: $results/metafile.yaml
report:  $(cd "$results/report" && pwd)/index.html (open it in a browser)
EOF
exit "$status"
