#!/usr/bin/env bash
# Health-balanced training and selection against recipe 2's mid-life over-prediction. Healthy
# (capped) windows are about half of the training and validation windows, so both the MSE and
# the all-windows validation RMSE are ruled by the healthy plateau. Variants of recipe 2, one
# seed-0 run each, judged on validation only (val_diagnostics.py: all-windows and
# health-class-balanced RMSE, error by band; cuts after each cycle >= 30 as recipe3_study.sh):
#   selbal  early stopping / plateau / kept weights on the balanced validation RMSE
#   bal     the same, and each epoch draws the three health classes equally often
#
#   AMNL=.venv/bin/amnl PYTHON=.venv/bin/python nohup experiments/balance_study.sh > runs/balance-study/study.log 2>&1 &
set -u
OUT=${STUDY_DIR:-runs/balance-study}
. "$(dirname "$0")/study_lib.sh"
base_configs 364becb $SUBSETS   # recipe 2
variants bal 'train.balance="health"' 'train.select_metric="rmse_balanced"'
variants selbal 'train.select_metric="rmse_balanced"'
compare_all bal selbal
