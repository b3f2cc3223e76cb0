# Shared by the recipe studies: `variant NAME SUBSET key=json-value ...` trains one seed-0 run of
# the base config "$OUT/base-$SUBSET.json" with the given fields changed (validation only).
# Callers set DATA, OUT, AMNL, PY and write the base configs first (base_configs REV SUBSET...).
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
