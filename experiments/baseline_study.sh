#!/usr/bin/env bash
# Engine baselines against recipe 2's mid-life over-prediction: add each input's deviation from
# the mean of the engine's first k cycles (data.baseline_cycles), which removes the unit-to-unit
# offsets that hide early degradation. Variants of recipe 2, one seed-0 run each, judged on
# validation only (val_diagnostics.py, cuts after each cycle >= 30 as recipe3_study.sh).
#
#   AMNL=.venv/bin/amnl PYTHON=.venv/bin/python nohup experiments/baseline_study.sh > runs/baseline-study/study.log 2>&1 &
set -u
OUT=${STUDY_DIR:-runs/baseline-study}
. "$(dirname "$0")/study_lib.sh"
base_configs 364becb $SUBSETS   # recipe 2
variants base10 data.baseline_cycles=10
variants base30 data.baseline_cycles=30
compare_all base10 base30
