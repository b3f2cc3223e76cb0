"""Wall time and peak RSS of the CLI commands a user runs, each in a fresh process.

    python benchmarks/cli_resources.py --data-dir ../shared/data/CMAPSS \\
        [--big-mb 205] [--out benchmarks/results/cli-resources.json]

Rows: ``import torch`` alone (the floor of every torch command), ``amnl evaluate`` on FD001-FD004 (and FD004 ``--all-windows``), ``amnl predict`` on
FD004's test file with torch, an exported INT8 folder with ONNX Runtime, and a history file of
``--big-mb`` MB (FD001's test engines repeated with new unit ids; 0 skips it), ``amnl export
--int8`` and the default ``amnl profile``. Peak RSS is the child's ``ru_maxrss`` from
``os.wait4`` (MB = 10^6 bytes); the CPU model is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(cmd: list[str]) -> dict:
    """Seconds and peak RSS (MB) of one command; its exit code."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace").strip().splitlines()[-1:] if proc.stderr else []
    return {"command": " ".join(cmd), "seconds": seconds, "peak_rss_mb": usage.ru_maxrss * 1024 / 1e6,
            "rc": os.waitstatus_to_exitcode(status), "stderr_tail": err}


def big_history(path: Path, source: Path, megabytes: float) -> int:
    """Write ``source``'s engines again and again, with new unit ids, until ``megabytes``."""
    rows = [line.split() for line in source.read_text().splitlines()]
    offset, size = 0, 0
    with open(path, "w") as f:
        while size < megabytes * 1e6:
            for r in rows:
                line = " ".join([str(int(r[0]) + offset), *r[1:]]) + "\n"
                f.write(line)
                size += len(line)
            offset += int(rows[-1][0])
    return offset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, default=Path("../shared/data/CMAPSS"))
    ap.add_argument("--big-mb", type=float, default=205.0)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/cli-resources.json"))
    args = ap.parse_args()
    from amnl.profiling.machine import machine_info

    amnl = [sys.executable, "-m", "amnl"]
    d = str(args.data_dir)
    tmp = Path(tempfile.mkdtemp(prefix="amnl-cli-resources-"))
    try:
        cmds = [[sys.executable, "-c", "import torch"]]  # the floor of every torch command
        cmds += [[*amnl, "evaluate", "--dataset", s, "--data-dir", d, "--out", str(tmp / s)]
                 for s in ("FD001", "FD002", "FD003", "FD004")]
        cmds += [[*amnl, "evaluate", "--dataset", "FD004", "--data-dir", d, "--all-windows"],
                 [*amnl, "predict", "--input", f"{d}/test_FD004.txt", "--weights", "FD004"],
                 [*amnl, "export", "--int8", "--weights", "FD004", "--data-dir", d, "--out",
                  str(tmp / "export" / "model_int8.onnx")],
                 [*amnl, "predict", "--input", f"{d}/test_FD004.txt", "--run", str(tmp / "export"),
                  "--runtime", "onnx", "--precision", "int8"],
                 [*amnl, "profile", "--json", str(tmp / "profile.json")]]
        if args.big_mb > 0:
            units = big_history(tmp / "big.txt", args.data_dir / "test_FD001.txt", args.big_mb)
            cmds.append([*amnl, "predict", "--input", str(tmp / "big.txt"), "--format", "csv"])
        rows = []
        for cmd in cmds:
            row = run(cmd)
            row["command"] = (row["command"].replace(sys.executable + " -m amnl", "amnl")
                              .replace(sys.executable, "python").replace(str(tmp), "TMP"))
            rows.append(row)
            print(f"{row['seconds']:7.1f} s {row['peak_rss_mb']:7.0f} MB  rc {row['rc']}  {row['command']}")
        result = {"machine": machine_info("cpu"), "rows": rows,
                  "big_file": {"mb": args.big_mb, "units": units} if args.big_mb > 0 else None,
                  "units": {"peak_rss_mb": "MB = 10^6 bytes"}}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"{result['machine']['cpu']}, {result['machine']['cores']} cores; wrote {args.out}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
