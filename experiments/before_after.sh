#!/usr/bin/env bash
# The same commands on an older revision and on the working tree, side by side in one run, same
# venv (the old code is put first on PYTHONPATH from a temporary git worktree).
#   experiments/before_after.sh [REV] [ROUNDS] [OUT_DIR] [NEW_REV]
#   (defaults f407680, 3, /tmp/before-after, the working tree)
# Per revision: wall time and peak RSS (GNU time %M) of `amnl evaluate` on FD001-FD004, and
# ROUNDS alternating rounds of `amnl bench` (1 s per measurement, window 30, torch fp32/int8,
# onnx fp32/int8, RSS on). REV must know `amnl bench --engines` (before the runtime rename).
set -euo pipefail
rev=${1:-f407680}; rounds=${2:-3}; out=${3:-/tmp/before-after}
cd "$(dirname "$0")/.."
data=${AMNL_DATA_DIR:-$(cd .. && pwd)/shared/data/CMAPSS}
old=$(mktemp -d)/old
git worktree add -q "$old" "$rev"
new=$(pwd)
if [ -n "${4:-}" ]; then
  new=$(mktemp -d)/new
  git worktree add -q "$new" "$4"
fi
trap 'git worktree remove --force "$old"; [ "$new" = "$(pwd)" ] || git worktree remove --force "$new"' EXIT
rm -rf "$out"; mkdir -p "$out"
lscpu | grep "Model name" | tee "$out/cpu.txt"
# two launchers (GNU time runs programs, not shell functions)
printf '#!/bin/sh\nPYTHONPATH="%s/src" exec python -c "from amnl.cli import main; main()" "$@"\n' "$old" > "$out/oldamnl"
printf '#!/bin/sh\nPYTHONPATH="%s/src" exec python -c "from amnl.cli import main; main()" "$@"\n' "$new" > "$out/newamnl"
chmod +x "$out/oldamnl" "$out/newamnl"
oldamnl() { "$out/oldamnl" "$@"; }
newamnl() { "$out/newamnl" "$@"; }
for d in FD001 FD002 FD003 FD004; do
  /usr/bin/time -f "old $d %e s %M KB" -a -o "$out/evaluate.txt" "$out/oldamnl" evaluate --dataset $d --data-dir "$data" --out "$out/old-$d" > /dev/null
  /usr/bin/time -f "new $d %e s %M KB" -a -o "$out/evaluate.txt" "$out/newamnl" evaluate --dataset $d --data-dir "$data" --out "$out/new-$d" > /dev/null
  cmp -s "$out/old-$d/predictions.csv" "$out/new-$d/predictions.csv" && echo "$d predictions.csv identical" >> "$out/evaluate.txt" || echo "$d predictions.csv differ" >> "$out/evaluate.txt"
done
cat "$out/evaluate.txt"
for r in $(seq "$rounds"); do
  oldamnl bench --seconds 1 --windows 30 --engines torch:fp32,torch:int8,onnx:fp32,onnx:int8 --threads 2 --out "$out/old-$r.json" > /dev/null 2>&1
  newamnl bench --seconds 1 --windows 30 --runtimes torch:fp32,torch:int8,onnx:fp32,onnx:int8 --threads 2 --out "$out/new-$r.json" > /dev/null 2>&1
done
python - "$out" "$rounds" <<'PY'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
for side in ("old", "new"):
    rows = {}
    for r in range(1, rounds + 1):
        d = json.load(open(f"{out}/{side}-{r}.json"))
        mib = "units" not in d  # before 2026-12-01 the bench's "MB" were MiB
        for row in d["rows"]:
            key = (row.get("runtime") or row["engine"], row["precision"])
            rss = row["rss_mb"] * (1.048576 if mib else 1) if row["rss_mb"] else float("nan")
            rows.setdefault(key, []).append((row["throughput"], row["p50_ms"], rss))
    for (rt, p), v in rows.items():
        med = [statistics.median(x[i] for x in v) for i in range(3)]
        lo, hi = min(x[0] for x in v), max(x[0] for x in v)
        print(f"{side} {rt:5s} {p:4s} b256 {med[0]:6.0f} windows/s ({lo:.0f}-{hi:.0f})  b1 p50 {med[1]:.2f} ms  RSS {med[2]:.0f} MB")
PY
