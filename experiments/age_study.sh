#!/usr/bin/env bash
# Engine age as an input (data.cycle_feature): at mid-life, sensors of a slowly degrading engine
# still look healthy, while its age says it is probably no longer new. A variant of recipe 2,
# one seed-0 run per subset, judged on validation only (val_diagnostics.py, cuts after each
# cycle >= 30 as recipe3_study.sh).
#
#   AMNL=.venv/bin/amnl PYTHON=.venv/bin/python nohup experiments/age_study.sh > runs/age-study/study.log 2>&1 &
set -u
OUT=${STUDY_DIR:-runs/age-study}
. "$(dirname "$0")/study_lib.sh"
base_configs 364becb $SUBSETS   # recipe 2
variants age data.cycle_feature=true
compare_all age
