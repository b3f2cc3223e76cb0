#!/usr/bin/env bash
# The FD001 recipe study of docs/results.md ("Recipe 2"): one run per variant, seed 0, each a
# change of configs/fd00x.json as it was for recipe 1 (commit 22ac346), judged on validation
# RMSE only; then the validation diagnostics. About 4-5 minutes a run on 2 cores.
#
#   nohup benchmarks/recipe_study.sh > runs/recipe-study/study.log 2>&1 &
set -u
DATA=${AMNL_DATA_DIR:-../shared/data/CMAPSS}
OUT=${STUDY_DIR:-runs/recipe-study}
AMNL=${AMNL:-amnl}
PY=${PYTHON:-python}
mkdir -p "$OUT"
for subset in FD001 FD002; do
  git show "22ac346:configs/$(echo "$subset" | tr 'A-Z' 'a-z').json" > "$OUT/recipe1-$subset.json"
done
variant() {  # name subset key=json-value ...
  local name=$1 subset=$2; shift 2
  $PY - "$OUT/recipe1-$subset.json" "$OUT/$name.json" "$@" <<'PYEOF'
import json, sys
src, dst, *pairs = sys.argv[1:]
cfg = json.load(open(src))
for pair in pairs:
    key, value = pair.split("=", 1)
    section, field = key.split(".")
    cfg[section][field] = json.loads(value)
json.dump(cfg, open(dst, "w"), indent=2)
PYEOF
  [ -f "$OUT/$name/metrics.json" ] && { echo "skip $name"; return; }
  echo "$(date +%T) train $name"
  $AMNL train --dataset "$subset" --seed 0 --config "$OUT/$name.json" --data-dir "$DATA" \
    --out "$OUT/$name" --no-progress > "$OUT/$name.log" 2>&1 || echo "FAILED $name"
  echo "$(date +%T) $name: $(tail -n 1 "$OUT/$name.log")"
}
R2="data.smoothing=0.1 model.funnel_dropout=0.0 train.epochs=30"
variant smooth FD001 data.smoothing=0.1
variant recipe2 FD001 $R2
variant recipe2-nosmooth FD001 model.funnel_dropout=0.0 train.epochs=30
variant recipe2-lstm01 FD001 $R2 model.lstm_dropout=0.1
variant recipe2-nodrop FD001 $R2 model.cnn_dropout=0.0 model.attn_dropout=0.0
variant recipe2-wd-noise FD001 $R2 train.weight_decay=1e-2 train.noise_std=0.05
variant recipe2-FD002 FD002 $R2
$PY benchmarks/val_diagnostics.py "$OUT/smooth" "$OUT/recipe2" --data-dir "$DATA" --train-engines
$PY benchmarks/val_diagnostics.py "$OUT"/recipe2 "$OUT"/recipe2-{lstm01,nodrop,wd-noise} --data-dir "$DATA"
