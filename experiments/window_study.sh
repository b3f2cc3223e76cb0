#!/usr/bin/env bash
# Window-length study of docs/results.md: recipe 2 (configs at commit 42f1b2c) with longer
# windows on FD001 and FD003, seed 0, judged on validation only. Runs with different windows
# are scored on the same points, every validation engine cut after each cycle >= 30
# (val_diagnostics.py --from-cycle 30); the window-30 references are the campaign's seed-0 runs.
#
#   nohup experiments/window_study.sh > runs/window-study/study.log 2>&1 &
set -u
OUT=${STUDY_DIR:-runs/window-study}
. "$(dirname "$0")/study_lib.sh"
base_configs 42f1b2c $SUBSETS   # recipe 2
variants w50 data.window=50
compare_all w50
