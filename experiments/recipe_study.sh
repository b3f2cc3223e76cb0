#!/usr/bin/env bash
# The FD001 recipe study of docs/results.md ("Recipe 2"): one run per variant, seed 0, each a
# change of configs/fd00x.json as it was for recipe 1 (commit 22ac346), judged on validation
# RMSE only; then the validation diagnostics. About 4-5 minutes a run on 2 cores.
#
#   nohup experiments/recipe_study.sh > runs/recipe-study/study.log 2>&1 &
set -u
OUT=${STUDY_DIR:-runs/recipe-study}
. "$(dirname "$0")/study_lib.sh"
base_configs 22ac346 FD001 FD002   # recipe 1
R2="data.smoothing=0.1 model.funnel_dropout=0.0 train.epochs=30"
variant smooth FD001 data.smoothing=0.1
variant recipe2 FD001 $R2
variant recipe2-nosmooth FD001 model.funnel_dropout=0.0 train.epochs=30
variant recipe2-lstm01 FD001 $R2 model.lstm_dropout=0.1
variant recipe2-nodrop FD001 $R2 model.cnn_dropout=0.0 model.attn_dropout=0.0
variant recipe2-wd-noise FD001 $R2 train.weight_decay=1e-2 train.noise_std=0.05
variant recipe2-FD002 FD002 $R2
$PY experiments/val_diagnostics.py "$OUT/smooth" "$OUT/recipe2" --data-dir "$DATA" --train-engines
$PY experiments/val_diagnostics.py "$OUT"/recipe2 "$OUT"/recipe2-{lstm01,nodrop,wd-noise} --data-dir "$DATA"
