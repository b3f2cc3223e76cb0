#!/usr/bin/env bash
# Window-length study of docs/results.md: recipe 2 (configs at commit 42f1b2c) with longer
# windows on FD001 and FD003, seed 0, judged on validation only. Runs with different windows
# are scored on the same points, every validation engine cut after each cycle >= 30
# (val_diagnostics.py --from-cycle 30); the window-30 references are the campaign's seed-0 runs.
#
#   nohup benchmarks/window_study.sh > runs/window-study/study.log 2>&1 &
set -u
OUT=${STUDY_DIR:-runs/window-study}
. "$(dirname "$0")/study_lib.sh"
base_configs 42f1b2c FD001 FD003   # recipe 2
for subset in FD001 FD003; do
  variant "w50-$subset" "$subset" data.window=50
done
for subset in FD001 FD003; do
  compare "$subset" "w50-$subset"
done
