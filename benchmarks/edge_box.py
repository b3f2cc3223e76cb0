"""An edge box, emulated: amnl on one core under a hard memory cap (cgroup v1 ``memory``).

For each cap (default 512, 256 and 128 MB, MB = 10^6 bytes) a cgroup is made with
``memory.limit_in_bytes`` (and ``memory.memsw.limit_in_bytes`` where swap accounting exists, so
nothing escapes to swap), and three workloads run in it pinned to core 0 (``taskset -c 0``),
one after the other, on an exported ONNX INT8 folder (``amnl export --int8``):

* ``predict``: the ``amnl predict`` command on ``test_FD001.txt`` (read, preprocess, each
  engine's latest window, JSON out), end to end;
* ``runtime``: a process that loads the folder without torch (``load_exported``), then
  measures batch-1 latency (p50 / p99 over ``--latency-calls`` calls) and the throughput on
  the first ``--windows`` windows of ``test_FD001.txt`` (in the runtime's chunks; the rest of
  the file's windows are freed first);
* ``serve``: ``amnl serve`` on the folder (SQLite), fed from outside the cgroup (core 1) by one
  client posting each cycle of the 100 FD001 test engines as one fleet request; the acks per
  second, the post latency, and whether every acknowledged reading got its prediction.

For each: whether it ran (exit status; an OOM kill shows as signal 9 and in the cgroup's
``oom_kill`` count), the peak RSS of the process (``VmHWM`` read by the process itself at its end or ``VmHWM`` for
the server), its anonymous part at the end (``RssAnon``: what cannot be paged out, there is no
swap in the cgroup) and the cgroup's peak charge (``memory.max_usage_in_bytes``). The page cache
is dropped before each workload, so every file page it touches (Python, the libraries, the
model) is read again and charged to the cgroup, as on a box that has just booted; clean file
pages can still be evicted under the cap, which is why a process can run with a peak RSS above
it. Needs root (cgroups) and ``taskset``::

    amnl export --format onnx --int8 --weights FD001 --out export/fd001/model_int8.onnx
    python benchmarks/edge_box.py --export export/fd001 --data-dir ../shared/data/CMAPSS

Writes ``benchmarks/results/edge-box-<time>.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from results_file import write_results

CGROUP_ROOT = Path("/sys/fs/cgroup/memory")
MB = 10**6
AMNL = [sys.executable, "-m", "amnl"]
#: The core the workloads run on; the serve client runs on the other one.
EDGE_CORE, CLIENT_CORE = "0", "1"


# -- cgroups ----------------------------------------------------------------------------------

class MemoryCap:
    """A cgroup v1 memory cgroup with a hard limit; processes are started inside it."""

    def __init__(self, limit_mb: int) -> None:
        if not (CGROUP_ROOT / "memory.limit_in_bytes").is_file():
            sys.exit(f"no cgroup v1 memory controller at {CGROUP_ROOT}")
        self.limit = limit_mb * MB
        self.path = CGROUP_ROOT / f"amnl-edge-{limit_mb}mb-{os.getpid()}"
        self.path.mkdir()
        (self.path / "memory.limit_in_bytes").write_text(str(self.limit))
        memsw = self.path / "memory.memsw.limit_in_bytes"
        self.memsw = memsw.is_file()
        if self.memsw:
            memsw.write_text(str(self.limit))
        self.reset()

    def reset(self) -> None:
        (self.path / "memory.max_usage_in_bytes").write_text("0")

    def read(self, name: str) -> int:
        return int((self.path / name).read_text().split()[0])

    def oom_kills(self) -> int:
        m = re.search(r"oom_kill (\d+)", (self.path / "memory.oom_control").read_text())
        return int(m.group(1)) if m else 0

    def command(self, argv: list[str], core: str = EDGE_CORE) -> list[str]:
        """``argv`` run inside this cgroup on ``core``: the shell joins the cgroup, then execs."""
        join = f"echo $$ > {self.path / 'cgroup.procs'} && exec \"$@\""
        return ["sh", "-c", join, "sh", "taskset", "-c", core, *argv]

    def close(self) -> None:
        for _ in range(50):  # the last process may take a moment to leave
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.1)


def drop_caches() -> None:
    """Empty the page cache, so that every file page a workload touches (Python, the shared
    libraries, the model) is read again and charged to its cgroup, as on a box that boots it."""
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def run_capped(cap: MemoryCap, argv: list[str], timeout: float) -> dict:
    """Run ``argv`` in ``cap``; exit status, wall time, peak RSS, cgroup peak, OOM kills."""
    drop_caches()
    cap.reset()
    kills = cap.oom_kills()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cap.command(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    wall = time.perf_counter() - t0
    return {"returncode": proc.returncode, "seconds": wall,
            "cgroup_peak_mb": cap.read("memory.max_usage_in_bytes") / MB,
            "oom_killed": cap.oom_kills() > kills or proc.returncode == -9,
            "stdout": out.decode(errors="replace"), "stderr": err.decode(errors="replace")[-2000:]}


# -- workloads --------------------------------------------------------------------------------

def child_rss() -> str:
    """Python that prints the process's peak RSS and its anonymous part now (MB), last."""
    return ("import re; s = open('/proc/self/status').read(); print('PEAK_RSS_MB', "
            "int(re.search(r'VmHWM:\\s+(\\d+) kB', s).group(1)) * 1024 / 1e6, "
            "int(re.search(r'RssAnon:\\s+(\\d+) kB', s).group(1)) * 1024 / 1e6)")


def _read_rss(r: dict, text: str) -> None:
    found = re.findall(r"PEAK_RSS_MB ([\d.]+) ([\d.]+)", text)
    r["peak_rss_mb"], r["anon_rss_mb"] = (float(found[-1][0]), float(found[-1][1])) if found else (None, None)


def predict(cap: MemoryCap, export: Path, data: Path) -> dict:
    """``amnl predict`` end to end, its peak RSS taken by a wrapper that execs nothing else."""
    code = ("import sys, runpy; sys.argv = ['amnl'] + sys.argv[1:]; "
            "from amnl.cli.app import main\ntry:\n    main()\nexcept SystemExit as e:\n"
            "    code = e.code\nelse:\n    code = 0\n" + child_rss() + "\nsys.exit(code)")
    argv = [sys.executable, "-c", code, "predict", "--run", str(export), "--runtime", "onnx",
            "--precision", "int8", "--threads", "1", "--input", str(data / "test_FD001.txt")]
    r = run_capped(cap, argv, timeout=300)
    _read_rss(r, r["stdout"])
    try:
        r["units"] = len(json.loads(r["stdout"][: r["stdout"].rfind("PEAK_RSS_MB")]))
    except (ValueError, TypeError):
        r["units"] = None
    r.pop("stdout")
    return r


RUNTIME_CHILD = """
import json, sys, time
import numpy as np
from amnl.data.cmapss import read_table
from amnl.inference.onnx_runtime import load_exported
export, test, calls, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
cfg, pre, runtime = load_exported(export, precision="int8", threads=1)
x = pre.windows(read_table(test)).arrays()[:n].copy()  # the rest of the file is freed
one = x[:1]
for _ in range(20):
    runtime(one)
lat = []
for _ in range(calls):
    t0 = time.perf_counter(); runtime(one); lat.append(time.perf_counter() - t0)
runtime(x[:256])
t0 = time.perf_counter(); runtime(x); wall = time.perf_counter() - t0
print(json.dumps({"b1_p50_ms": float(np.percentile(lat, 50) * 1e3),
                  "b1_p99_ms": float(np.percentile(lat, 99) * 1e3),
                  "windows": len(x), "windows_per_s": len(x) / wall, "chunk": runtime.chunk,
                  "torch_imported": "torch" in sys.modules}))
"""


def runtime(cap: MemoryCap, export: Path, data: Path, calls: int, windows: int) -> dict:
    argv = [sys.executable, "-c", RUNTIME_CHILD + child_rss(), str(export),
            str(data / "test_FD001.txt"), str(calls), str(windows)]
    r = run_capped(cap, argv, timeout=300)
    text = r.pop("stdout")
    _read_rss(r, text)
    for line in text.strip().splitlines():
        if line.startswith("{"):
            r.update(json.loads(line))
    return r


def serve(cap: MemoryCap, export: Path, data: Path, seconds: float, folder: Path,
          extra: list[str] = ()) -> dict:
    """``amnl serve`` in the cgroup; one client outside it posts whole fleet cycles."""
    import httpx

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from serve_load import free_port  # the load benchmark's helper

    port = free_port()
    db = folder / f"edge-{cap.limit // MB}-{port}.db"
    drop_caches()
    cap.reset()
    kills = cap.oom_kills()
    log = open(folder / f"edge-serve-{port}.log", "w")  # noqa: SIM115 - closed below
    argv = [*AMNL, "serve", "--model", str(export), "--runtime", "onnx", "--precision", "int8",
            "--db", str(db), "--port", str(port), "--log-level", "warning", *extra]
    proc = subprocess.Popen(cap.command(argv), stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    result: dict = {"started": False}
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                    result["started"] = True
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        if result["started"]:
            result.update(_feed(url, data, seconds))
            drain, result["predicted"] = _drained(url, result["acked"])
            result["drain_seconds"], result["predicted_all"] = drain, drain is not None
            # predictions a second from the first reading to the last prediction (or the timeout)
            result["predicted_per_s"] = result["predicted"] / (result["seconds"] + (drain or 300))
            stat = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            result["major_faults"] = int(stat[9])  # pages read back from disk (evicted code)
            status = Path(f"/proc/{proc.pid}/status").read_text()
            result["peak_rss_mb"] = int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) * 1024 / MB
            result["anon_rss_mb"] = int(re.search(r"RssAnon:\s+(\d+) kB", status).group(1)) * 1024 / MB
            result["torch_mapped"] = "libtorch" in Path(f"/proc/{proc.pid}/maps").read_text()
    except (httpx.HTTPError, OSError) as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()
    result.update({"returncode": proc.returncode, "cgroup_peak_mb": cap.read("memory.max_usage_in_bytes") / MB,
                   "oom_killed": cap.oom_kills() > kills or proc.returncode == -9,
                   "log_tail": Path(log.name).read_text()[-1500:]})
    return result


def _feed(url: str, data: Path, seconds: float) -> dict:
    """Cycle k of every FD001 test engine as one request, k = 1, 2, ... for ``seconds`` (once
    the file is done, again under new asset ids)."""
    import httpx

    from amnl.data.cmapss import COLUMNS, load_subset

    os.sched_setaffinity(0, {int(CLIENT_CORE)})
    try:
        test = load_subset(data, "FD001", train=False).test
        fleet = {int(u): test.values[test.unit == u] for u in test.units}
        latencies, acked, errors = [], 0, 0
        t0 = time.perf_counter()
        longest = max(len(v) for v in fleet.values())
        with httpx.Client(base_url=url, timeout=60) as client:
            for step in range(10**9):
                if time.perf_counter() - t0 > seconds:
                    break
                lap, k = divmod(step, longest)
                body = [{"asset_id": f"edge-{lap}-{u}", "cycle": int(rows[k][1]),
                         **{c: float(v) for c, v in zip(COLUMNS[2:], rows[k][2:])}}
                        for u, rows in fleet.items() if k < len(rows)]
                s = time.perf_counter()
                r = client.post("/v1/readings", json={"readings": body})
                latencies.append(time.perf_counter() - s)
                if r.status_code == 200:
                    acked += r.json()["accepted"]
                else:
                    errors += 1
        wall = time.perf_counter() - t0
    finally:
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    lat = np.array(latencies) * 1e3
    return {"acked": acked, "errors": errors, "requests": len(latencies), "seconds": wall,
            "acked_per_s": acked / wall, "post_p50_ms": float(np.percentile(lat, 50)),
            "post_p99_ms": float(np.percentile(lat, 99))}


def _drained(url: str, acked: int, timeout: float = 300) -> tuple[float | None, int]:
    """Seconds until every acknowledged reading has its prediction (None: not in ``timeout``),
    and the predictions stored by then."""
    import httpx

    t0 = time.monotonic()
    predicted = 0
    while time.monotonic() - t0 < timeout:
        text = httpx.get(url + "/metrics", timeout=60).text
        m = re.search(r"^amnl_predictions_total ([\d.e+]+)$", text, re.MULTILINE)
        predicted = int(float(m.group(1))) if m else 0
        if predicted >= acked:
            return time.monotonic() - t0, predicted
        time.sleep(0.2)
    return None, predicted


# -- the table --------------------------------------------------------------------------------

def table(rows: list[dict]) -> str:
    head = ("cap MB", "workload", "ran", "peak RSS MB", "anon MB", "cgroup peak MB", "b1 p50/p99 ms",
            "windows/s", "readings acked/s", "post p50/p99 ms", "predicted/s")
    lines = [head]
    for r in rows:
        ok = r.get("returncode") == 0 or (r["workload"] == "serve" and r.get("predicted_all"))
        if ok:
            ran = "yes"
        elif r.get("oom_killed"):
            ran = "OOM-killed"
        elif r["workload"] == "serve" and r.get("acked"):
            ran = f"acks; {r.get('predicted', 0):,} of {r['acked']:,} predicted in 300 s"
        else:
            ran = f"no ({r.get('returncode')})"
        lines.append((str(r["cap_mb"]), r["workload"], ran,
                      _f(r.get("peak_rss_mb")), _f(r.get("anon_rss_mb")), _f(r.get("cgroup_peak_mb")),
                      f"{r['b1_p50_ms']:.2f} / {r['b1_p99_ms']:.2f}" if "b1_p50_ms" in r else "-",
                      _f(r.get("windows_per_s"), ",.0f"), _f(r.get("acked_per_s"), ",.0f"),
                      f"{r['post_p50_ms']:.1f} / {r['post_p99_ms']:.1f}" if "post_p50_ms" in r else "-",
                      _f(r.get("predicted_per_s"), ",.0f")))
    from amnl.profiling.text import align_columns

    return align_columns(lines, left=3)


def _f(v, fmt: str = ".0f") -> str:
    return "-" if v is None else format(v, fmt)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--export", type=Path, required=True, help="folder of `amnl export --int8`")
    p.add_argument("--data-dir", type=Path, default=Path("../shared/data/CMAPSS"))
    p.add_argument("--caps", default="512,256,128", help="memory caps, MB (10^6 bytes)")
    p.add_argument("--workloads", default="predict,runtime,serve")
    p.add_argument("--latency-calls", type=int, default=2000)
    p.add_argument("--windows", type=int, default=2048,
                   help="windows of test_FD001.txt the runtime's throughput is measured on")
    p.add_argument("--serve-seconds", type=float, default=8.0)
    p.add_argument("--serve-args", default="", help="more `amnl serve` options, e.g. '--max-batch 16'")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    if shutil.which("taskset") is None:
        sys.exit("taskset (util-linux) is needed to pin the workloads to one core")
    from amnl.profiling.machine import describe, machine_info

    machine = machine_info("cpu", 1)
    rows = []
    with tempfile.TemporaryDirectory(prefix="amnl-edge-") as tmp:
        for cap_mb in (int(c) for c in args.caps.split(",")):
            cap = MemoryCap(cap_mb)
            try:
                for workload in args.workloads.split(","):
                    if workload == "predict":
                        r = predict(cap, args.export, args.data_dir)
                    elif workload == "runtime":
                        r = runtime(cap, args.export, args.data_dir, args.latency_calls,
                                    args.windows)
                    elif workload == "serve":
                        r = serve(cap, args.export, args.data_dir, args.serve_seconds, Path(tmp),
                                  args.serve_args.split())
                    else:
                        sys.exit(f"unknown workload {workload!r}")
                    rows.append({"cap_mb": cap_mb, "workload": workload, "memsw": cap.memsw, **r})
                    print(f"{cap_mb} MB {workload}: done", file=sys.stderr)
            finally:
                cap.close()
    print(f"{describe(machine)}; one core ({EDGE_CORE}) for the workloads")
    print(table(rows))
    write_results({"machine": machine, "export": str(args.export), "serve_args": args.serve_args,
                   "command": sys.argv, "rows": rows, "table": table(rows)}, args.out, "edge-box")


if __name__ == "__main__":
    main()
