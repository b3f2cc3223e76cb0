"""Load benchmark of ``amnl serve``: FD001-FD004's test trajectories as 707 live assets.

    python benchmarks/serve_load.py --data-dir ../shared/data/CMAPSS \\
        [--clients 1,16,64,256] [--seconds 8] [--precision int8] [--out FILE.json]

A real server (``amnl serve``, SQLite, ONNX Runtime) runs as a subprocess on loopback; a real
HTTP client (httpx, asyncio) replays the trajectories, each asset posting its cycles in order.
For batching on and off, each with a fresh server and database:

* **single**: one reading a request, ``--clients`` concurrent clients, for ``--seconds``;
* **fleet**: ``POST /v1/readings`` with one cycle of every live asset a request (707 readings),
  one client.

Per scenario: acknowledged readings/s, ack latency p50/p95/p99 (client side), errors, the
prediction throughput (predictions stored per second, from the first acknowledgement until
the backlog is empty), ack-to-prediction p50/p95 (server side, interpolated in the
``amnl_ack_to_prediction_seconds`` histogram's buckets), and whether every acknowledged reading
got its prediction (rows in the database). Per server: peak RSS (``VmHWM``) and whether torch
was mapped. Then one run of ``wrk`` (Debian's package) against the ingestion endpoint, each
request a new asset's first cycle, and the runtime's own throughput at the server's batch
size and thread count (the ``amnl bench`` measurement, in this process) for comparison.

The FD001 model scores every subset's readings (FD002/FD004's are outside its training range,
which changes the numbers it predicts, not the work). The client runs on the same cores as the
server: on 2 cores it takes a large share of them, which the table states.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from results_file import print_rows, write_results

AMNL = [sys.executable, "-m", "amnl"]
SUBSETS = ("FD001", "FD002", "FD003", "FD004")


def load_fleet(data_dir: Path) -> dict[str, list[dict]]:
    """Asset id -> its readings (API dicts) in cycle order: the 707 test engines."""
    from amnl.data.cmapss import COLUMNS, load_subset

    fleet = {}
    for name in SUBSETS:
        test = load_subset(data_dir, name, train=False).test
        for u in test.units:
            rows = test.values[test.unit == u]
            fleet[f"{name}-{int(u)}"] = [
                {"cycle": int(r[1]), **{c: float(v) for c, v in zip(COLUMNS[2:], r[2:])}}
                for r in rows]
    return fleet


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``amnl serve`` in a subprocess on a fresh SQLite database."""

    def __init__(self, model: Path, precision: str, batching: bool, folder: Path,
                 extra: list[str] = (), db: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db = db or folder / f"serve-{'on' if batching else 'off'}-{self.port}.db"
        cmd = [*AMNL, "serve", "--model", str(model), "--runtime", "onnx", "--precision",
               precision, "--db", str(self.db), "--port", str(self.port), "--log-level",
               "warning", *([] if batching else ["--no-batching"]), *extra]
        self.log = open(folder / f"server-{self.port}.log", "w")  # noqa: SIM115 - closed by stop
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        import httpx

        deadline = time.monotonic() + 120
        while True:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start; see {self.log.name}")
            try:
                r = httpx.get(self.url + "/readyz", timeout=1)
                if r.status_code == 200:
                    self.ready = r.json()
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)

    def peak_rss_mb(self) -> float:
        text = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+) kB", text).group(1)) * 1024 / 1e6

    def torch_mapped(self) -> bool:
        return "libtorch" in Path(f"/proc/{self.proc.pid}/maps").read_text()

    def metrics(self) -> dict[str, float]:
        import httpx

        out = {}
        for line in httpx.get(self.url + "/metrics", timeout=30).text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out

    def counts(self) -> tuple[int, int]:
        with sqlite3.connect(self.db) as conn:
            return (conn.execute("SELECT count(*) FROM readings").fetchone()[0],
                    conn.execute("SELECT count(*) FROM predictions").fetchone()[0])

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def histogram_quantiles(before: dict, after: dict, name: str, qs=(0.5, 0.95)) -> dict:
    """Quantiles of a Prometheus histogram's increase between two scrapes (linear within
    buckets)."""
    pat = re.compile(rf'^{name}_bucket\{{le="([^"]+)"\}}$')
    buckets = sorted((float("inf") if m.group(1) == "+Inf" else float(m.group(1)),
                      after[k] - before.get(k, 0.0))
                     for k in after if (m := pat.match(k)))
    total = buckets[-1][1] if buckets else 0
    out = {}
    for q in qs:
        if not total:
            out[f"p{int(q * 100)}_ms"] = None
            continue
        target, lo_edge, lo_count = q * total, 0.0, 0.0
        for edge, count in buckets:
            if count >= target:
                if edge == float("inf"):
                    out[f"p{int(q * 100)}_ms"] = lo_edge * 1000
                else:
                    frac = (target - lo_count) / max(count - lo_count, 1e-9)
                    out[f"p{int(q * 100)}_ms"] = (lo_edge + frac * (edge - lo_edge)) * 1000
                break
            lo_edge, lo_count = edge, count
    return out


def wait_drained(server: Server, acked_total: float, timeout: float = 600) -> float:
    """Seconds until every acknowledged reading has its prediction (queue depth 0)."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        m = server.metrics()
        if m.get("amnl_predictions_total", 0) >= acked_total and \
                m.get("amnl_prediction_queue_depth", 1) == 0:
            break
        time.sleep(0.05)
    return time.perf_counter() - t0


async def single_posts(url: str, fleet: dict[str, list[dict]], prefix: str, clients: int,
                       seconds: float) -> dict:
    """``clients`` workers, each replaying its share of the assets one reading a request."""
    import aiohttp

    names = list(fleet)
    random.Random(0).shuffle(names)
    latencies: list[float] = []
    errors = 0
    acked = 0
    stop_at = time.perf_counter() + seconds
    headers = {"content-type": "application/json"}

    async def worker(i: int, session) -> None:
        nonlocal errors, acked
        share = names[i::clients]
        pos = {a: 0 for a in share}
        while time.perf_counter() < stop_at and pos:
            for a in list(pos):
                if time.perf_counter() >= stop_at:
                    return
                k = pos[a]
                body = json.dumps({"readings": [fleet[a][k]]})
                t0 = time.perf_counter()
                try:
                    async with session.post(f"/v1/assets/{prefix}{a}/readings", data=body,
                                            headers=headers) as r:
                        await r.read()
                        ok = r.status == 200
                except aiohttp.ClientError:
                    ok = False
                latencies.append(time.perf_counter() - t0)
                if ok:
                    acked += 1
                    pos[a] = k + 1
                    if pos[a] == len(fleet[a]):
                        del pos[a]
                else:
                    errors += 1

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(url, connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=60)) as session:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(i, session) for i in range(clients)))
        wall = time.perf_counter() - t0
    return {"acked": acked, "errors": errors, "seconds": wall, "latencies": latencies}


async def fleet_posts(url: str, fleet: dict[str, list[dict]], prefix: str, seconds: float,
                      max_cycles: int) -> dict:
    """One client posting cycle k of every asset still alive, k = 1, 2, ..."""
    import aiohttp

    latencies, errors, acked = [], 0, 0
    headers = {"content-type": "application/json"}
    async with aiohttp.ClientSession(url, timeout=aiohttp.ClientTimeout(total=120)) as session:
        t0 = time.perf_counter()
        for k in range(max_cycles):
            body = [{"asset_id": f"{prefix}{a}", **rows[k]} for a, rows in fleet.items()
                    if k < len(rows)]
            if not body or time.perf_counter() - t0 > seconds:
                break
            data = json.dumps({"readings": body})
            s = time.perf_counter()
            async with session.post("/v1/readings", data=data, headers=headers) as r:
                out = await r.read()
                status = r.status
            latencies.append(time.perf_counter() - s)
            if status == 200:
                acked += json.loads(out)["accepted"]
            else:
                errors += 1
        wall = time.perf_counter() - t0
    return {"acked": acked, "errors": errors, "seconds": wall, "latencies": latencies,
            "readings_per_request": len(fleet)}


def scenario(server: Server, name: str, run) -> dict:
    before = server.metrics()
    t0 = time.perf_counter()
    res = asyncio.run(run)
    drain = wait_drained(server, before.get("amnl_readings_acknowledged_total", 0) + res["acked"])
    after = server.metrics()
    lat = np.array(res.pop("latencies")) * 1000
    predicted = after["amnl_predictions_total"] - before.get("amnl_predictions_total", 0)
    rows = {
        "scenario": name, **res,
        "acked_per_s": res["acked"] / res["seconds"],
        "ack_p50_ms": float(np.percentile(lat, 50)) if len(lat) else None,
        "ack_p95_ms": float(np.percentile(lat, 95)) if len(lat) else None,
        "ack_p99_ms": float(np.percentile(lat, 99)) if len(lat) else None,
        "predictions": predicted,
        "predictions_per_s": predicted / (time.perf_counter() - t0),
        "drain_s": drain,
        **{f"ack_to_prediction_{k}": v for k, v in histogram_quantiles(
            before, after, "amnl_ack_to_prediction_seconds").items()},
        "batch_size_mean": _mean_delta(before, after, "amnl_batch_size"),
    }
    readings, preds = server.counts()
    rows["all_predicted"] = readings == preds
    return rows


def _mean_delta(before: dict, after: dict, name: str) -> float | None:
    n = after.get(f"{name}_count", 0) - before.get(f"{name}_count", 0)
    s = after.get(f"{name}_sum", 0) - before.get(f"{name}_sum", 0)
    return s / n if n else None


def runtime_throughput(model: Path, precision: str, batch: int, threads: int,
                       seconds: float = 3.0) -> float:
    """Windows/s of the runtime alone at the server's batch and threads (warmed up, median of
    5 timed runs)."""
    from amnl.config import InferenceConfig
    from amnl.inference.predictor import Predictor

    p = Predictor.load(model, InferenceConfig(runtime="onnx", precision=precision,
                                              threads=threads, batch_size=batch))
    x = np.random.default_rng(0).normal(size=(batch, p.window, p.config.model.in_features)
                                        ).astype(np.float32)
    for _ in range(5):
        p(x)
    rates = []
    for _ in range(5):
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / 5:
            p(x)
            n += batch
        rates.append(n / (time.perf_counter() - t0))
    return float(np.median(rates))


WRK_SCRIPT = """
-- every request is a new asset's first cycle: wrk-<thread>-<n>
local threads = 0
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end
function init(args)
  counter = 0
end
function request()
  counter = counter + 1
  local body = '{"readings": [%s]}'
  local path = string.format("/v1/assets/wrk-%%d-%%d/readings", tid, counter)
  return wrk.format("POST", path, {["Content-Type"] = "application/json"}, body)
end
"""


def run_wrk(server: Server, reading: dict, folder: Path, seconds: float, clients: int) -> dict:
    """wrk against the ingestion endpoint: every request a new asset's first reading."""
    if not shutil.which("wrk"):
        return {"skipped": "wrk is not installed (Debian: apt-get install wrk)"}
    script = folder / "post.lua"
    script.write_text(WRK_SCRIPT % json.dumps(reading).replace("%", "%%"))
    cmd = ["wrk", "-t", "2", "-c", str(clients), "-d", f"{int(seconds)}s", "--latency", "-s",
           str(script), server.url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60,
                         check=False).stdout
    readings, _ = server.counts()
    res = {"command": " ".join(cmd[:-3] + ["post.lua", "URL"]), "output": out,
           "stored_assets": readings}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    res["requests_per_s"] = float(m.group(1)) if m else None
    for q in ("50", "99"):
        m = re.search(rf"\s{q}%\s+([\d.]+)(us|ms|s)", out)
        if m:
            res[f"p{q}_ms"] = float(m.group(1)) * {"us": 1e-3, "ms": 1, "s": 1e3}[m.group(2)]
    res["non_2xx"] = int(m.group(1)) if (m := re.search(r"Non-2xx.*?:\s+(\d+)", out)) else 0
    return res


def print_table(rows: list[dict]) -> None:
    cols = [("server", "{}"), ("scenario", "{}"), ("acked_per_s", "{:.0f}"),
            ("ack_p50_ms", "{:.1f}"), ("ack_p95_ms", "{:.1f}"), ("ack_p99_ms", "{:.1f}"),
            ("errors", "{}"), ("predictions_per_s", "{:.0f}"), ("batch_size_mean", "{:.1f}"),
            ("ack_to_prediction_p50_ms", "{:.1f}"), ("ack_to_prediction_p95_ms", "{:.1f}"),
            ("all_predicted", "{}")]
    print_rows(rows, cols)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, default=Path("../shared/data/CMAPSS"))
    ap.add_argument("--model", default="FD001", help="bundled model or run directory")
    ap.add_argument("--precision", default="int8", choices=["fp32", "int8"])
    ap.add_argument("--clients", default="1,16,64,256")
    ap.add_argument("--seconds", type=float, default=8.0, help="per single-post scenario")
    ap.add_argument("--fleet-seconds", type=float, default=8.0)
    ap.add_argument("--wrk-seconds", type=float, default=8.0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    from amnl.export.onnx import export_run
    from amnl.profiling.machine import describe, machine_info
    from amnl.rundir import ONNX_FILES, resolve_source

    clients = [int(c) for c in args.clients.split(",")]
    fleet = load_fleet(args.data_dir)
    folder = Path(tempfile.mkdtemp(prefix="amnl-serve-load-"))
    model = folder / "model"
    export_run(resolve_source(args.model), model / ONNX_FILES[args.precision],
               int8=args.precision == "int8")
    results = {"machine": machine_info(), "model": args.model, "precision": args.precision,
               "assets": len(fleet), "readings_available": sum(map(len, fleet.values())),
               "command": " ".join([os.path.relpath(sys.argv[0]), *sys.argv[1:]]),
               "rows": [], "servers": []}
    rows = results["rows"]
    try:
        for batching in (True, False):
            label = "batching on" if batching else "batching off"
            server = Server(model, args.precision, batching, folder)
            try:
                for c in clients:
                    r = scenario(server, f"single x{c}", single_posts(
                        server.url, fleet, f"s{c}-", c, args.seconds))
                    rows.append({"server": label, "clients": c, **r})
                    print_table(rows[-1:])
                r = scenario(server, "fleet", fleet_posts(server.url, fleet, "f-",
                                                         args.fleet_seconds, 10_000))
                rows.append({"server": label, "clients": 1, **r})
                print_table(rows[-1:])
                results["servers"].append({"server": label, **server.ready,
                                           "peak_rss_mb": server.peak_rss_mb(),
                                           "torch_mapped": server.torch_mapped()})
            finally:
                server.stop()
        server = Server(model, args.precision, True, folder)
        try:
            results["wrk"] = run_wrk(server, fleet[next(iter(fleet))][0], folder,
                                     args.wrk_seconds, 64)
        finally:
            server.stop()
        on = results["servers"][0]
        results["runtime_windows_per_s"] = runtime_throughput(
            model, args.precision, on["max_batch"], max(1, (os.cpu_count() or 2) - 1))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print()
    print_table(rows)
    print()
    for s in results["servers"]:
        print(f"{s['server']}: peak RSS {s['peak_rss_mb']:.0f} MB, torch mapped: "
              f"{s['torch_mapped']}, max batch {s['max_batch']}")
    w = results.get("wrk", {})
    print(f"wrk: {w.get('requests_per_s')} requests/s, p50 {w.get('p50_ms')} ms, p99 "
          f"{w.get('p99_ms')} ms, non-2xx {w.get('non_2xx')}")
    print(f"runtime alone at batch {on['max_batch']}: {results['runtime_windows_per_s']:.0f} "
          "windows/s")
    print(describe(results["machine"]))
    write_results(results, args.out, "serve-load")


if __name__ == "__main__":
    main()
