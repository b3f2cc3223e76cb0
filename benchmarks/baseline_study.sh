#!/usr/bin/env bash
# Engine baselines against recipe 2's mid-life over-prediction: add each input's deviation from
# the mean of the engine's first k cycles (data.baseline_cycles), which removes the unit-to-unit
# offsets that hide early degradation. Variants of recipe 2, one seed-0 run each, judged on
# validation only (val_diagnostics.py, cuts after each cycle >= 30 as recipe3_study.sh).
#
#   AMNL=.venv/bin/amnl PYTHON=.venv/bin/python nohup benchmarks/baseline_study.sh > runs/baseline-study/study.log 2>&1 &
set -u
OUT=${STUDY_DIR:-runs/baseline-study}
. "$(dirname "$0")/study_lib.sh"
base_configs 364becb FD001 FD003   # recipe 2
for subset in FD003 FD001; do
  for k in 10 30; do
    variant "base$k-$subset" "$subset" data.baseline_cycles=$k
  done
done
for subset in FD001 FD003; do
  compare "$subset" {base10,base30}-"$subset"
done
