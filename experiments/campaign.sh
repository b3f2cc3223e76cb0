#!/usr/bin/env bash
# The results campaign of docs/results.md: train every (subset, loss, seed) listed below in
# sequence on this machine's CPU, each with its log; then evaluate each run on the test set
# (reporting only: selection uses validation RMSE). Re-running skips finished runs and resumes
# interrupted ones, so the campaign can be stopped and continued.
#
#   nohup experiments/campaign.sh > runs/campaign/campaign.log 2>&1 &
#
# CAMPAIGN_RUNS replaces the list below ("subset loss seed" per line), for a partial campaign.
set -u
DATA=${AMNL_DATA_DIR:-../shared/data/CMAPSS}
OUT=${CAMPAIGN_DIR:-runs/campaign}
AMNL=${AMNL:-amnl}
mkdir -p "$OUT"
# subset loss seed   (order: one run per subset first, so every subset has a model early)
RUNS=${CAMPAIGN_RUNS:-"FD001 amnl 0
FD002 amnl 0
FD003 amnl 0
FD004 amnl 0
FD001 amnl 1
FD003 amnl 1
FD002 amnl 1
FD004 amnl 1
FD001 amnl 2
FD003 amnl 2
FD001 baseline 0
FD002 baseline 0"}
echo "$RUNS" | while read -r subset loss seed; do
  name="$subset-$loss-s$seed"
  run="$OUT/$name"
  cfg="configs/$(echo "$subset" | tr 'A-Z' 'a-z').json"
  if [ -f "$run/metrics.json" ] && ! grep -q '"interrupted": true' "$run/metrics.json"; then
    echo "$(date +%T) skip $name (done)"
  else
    extra=""
    [ -f "$run/checkpoint.pt" ] && extra="--resume"
    echo "$(date +%T) train $name $extra"
    $AMNL train --dataset "$subset" --loss "$loss" --seed "$seed" --config "$cfg" \
      --data-dir "$DATA" --out "$run" --no-progress $extra > "$OUT/$name.log" 2>&1 \
      || { echo "$(date +%T) FAILED $name (see $OUT/$name.log)"; continue; }
  fi
  if [ ! -f "$run/test/metrics.json" ]; then
    $AMNL evaluate --dataset "$subset" --run "$run" --data-dir "$DATA" --out "$run/test" \
      --all-windows >> "$OUT/$name.log" 2>&1 || echo "$(date +%T) evaluation FAILED $name"
  fi
  echo "$(date +%T) done $name: $(tail -n 3 "$OUT/$name.log" | tr '\n' ' ')"
done
