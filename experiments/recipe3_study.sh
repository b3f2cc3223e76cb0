#!/usr/bin/env bash
# Candidates for a third recipe, one seed-0 run per variant on FD001 and FD003, each a change of
# recipe 2 (configs at commit 364becb), judged on validation only (val_diagnostics.py, every
# validation engine cut after each cycle >= 30; the campaign's seed-0 runs are the reference).
#
#   AMNL=.venv/bin/amnl PYTHON=.venv/bin/python nohup experiments/recipe3_study.sh > runs/recipe3-study/study.log 2>&1 &
set -u
OUT=${STUDY_DIR:-runs/recipe3-study}
. "$(dirname "$0")/study_lib.sh"
base_configs 364becb $SUBSETS   # recipe 2
variants smooth02 data.smoothing=0.2
variants smooth005 data.smoothing=0.05
variants normalized 'train.loss="amnl-normalized"'
variants lr5e-4 train.lr=5e-4 train.plateau_patience=3 train.early_stop_patience=6
compare_all smooth02 smooth005 normalized lr5e-4
