# Shared by the recipe studies. Set OUT (the study folder) and source this file: it fills the
# settings below from the environment, creates OUT, and defines
#   base_configs REV SUBSET...          configs/fd00x.json as of commit REV -> "$OUT/base-$SUBSET.json"
#   variant NAME SUBSET key=json ...    one seed-0 run of the base config with fields changed
#   compare SUBSET NAME...              validation of the campaign's seed-0 run and the variants,
#                                       every engine cut after each cycle >= 30 (any window)
#   variants NAME key=json ...          variant "NAME-$subset" for every subset of $SUBSETS
#   compare_all NAME...                 compare "NAME-$subset" ... for every subset of $SUBSETS
DATA=${AMNL_DATA_DIR:-../shared/data/CMAPSS}
AMNL=${AMNL:-amnl}
PY=${PYTHON:-python}
REF=${REF_CAMPAIGN:-runs/campaign2}
SUBSETS=${STUDY_SUBSETS:-FD001 FD003}
mkdir -p "$OUT"
base_configs() {  # rev subset ...
  local rev=$1; shift
  for subset in "$@"; do
    git show "$rev:configs/$(echo "$subset" | tr 'A-Z' 'a-z').json" > "$OUT/base-$subset.json"
  done
}
variant() {  # name subset key=json-value ...
  local name=$1 subset=$2; shift 2
  $PY - "$OUT/base-$subset.json" "$OUT/$name.json" "$@" <<'PYEOF'
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
compare() {  # subset name ...
  local subset=$1; shift
  $PY experiments/val_diagnostics.py "$REF/$subset-amnl-s0" "${@/#/$OUT/}" --data-dir "$DATA" \
    --from-cycle 30
}
variants() {  # name key=json-value ...
  local name=$1 subset; shift
  for subset in $SUBSETS; do variant "$name-$subset" "$subset" "$@"; done
}
compare_all() {  # name ...
  local subset
  for subset in $SUBSETS; do compare "$subset" "${@/%/-$subset}"; done
}
