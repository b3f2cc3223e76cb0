#!/usr/bin/env bash
# Run a command serialised with other measurements (a lock), and, when the flag file
# /tmp/amnl-pause-training exists, with background training runs paused (SIGSTOP/SIGCONT) so
# that timings see an otherwise idle CPU. Development helper; CI does not use it.
set -u
exec 9>/tmp/amnl-quiet.lock
flock 9
pids=""
if [ -e /tmp/amnl-pause-training ]; then
  pids=$(pgrep -f "amnl train|experiments/campaign" | grep -v "^$$\$" || true)
  [ -n "$pids" ] && kill -STOP $pids
fi
trap '[ -n "$pids" ] && kill -CONT $pids' EXIT
"$@"
