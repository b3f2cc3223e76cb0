#!/usr/bin/env bash
# Run a command with background training runs paused (SIGSTOP/SIGCONT), so that timings see an
# otherwise idle CPU. Calls are serialised by a lock. Development helper; CI does not use it.
set -u
exec 9>/tmp/amnl-quiet.lock
flock 9
pids=$(pgrep -f "amnl train|benchmarks/campaign" | grep -v "^$$\$" || true)
[ -n "$pids" ] && kill -STOP $pids
trap '[ -n "$pids" ] && kill -CONT $pids' EXIT
"$@"
