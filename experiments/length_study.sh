#!/usr/bin/env bash
# Does recipe 2 stop too early? Its runs stopped 4 epochs after the best validation RMSE, often
# right after the first learning-rate drop, with the training loss still falling and the same
# mid-life over-prediction on training engines as on validation (underfitting). One seed-0 run
# per subset with a longer schedule, judged on validation only (as recipe3_study.sh).
#
#   AMNL=.venv/bin/amnl PYTHON=.venv/bin/python nohup experiments/length_study.sh > runs/length-study/study.log 2>&1 &
set -u
OUT=${STUDY_DIR:-runs/length-study}
. "$(dirname "$0")/study_lib.sh"
base_configs 364becb $SUBSETS   # recipe 2
LONG=(train.epochs=80 train.plateau_patience=4 train.early_stop_patience=10)
variants long "${LONG[@]}"
compare_all long
