"""Does reading the dashboard slow ingestion? ``amnl serve`` with 50,000 assets, ingestion
measured with no dashboard reader and with 8 readers hammering ``/``.

    python benchmarks/dashboard_load.py --data-dir ../shared/data/CMAPSS \\
        [--assets 50000] [--readers 0,8] [--seconds 6] [--repeats 2] [--out FILE.json]

The fleet is made quickly: a real server (``amnl serve``, SQLite, ONNX Runtime FP32) takes
FD001's 100 test engines through ``POST /v1/readings`` (one cycle of every engine a request)
and predicts them; the failures of the first 50 are recorded (``POST .../failure`` at their
true end of life, so the live accuracy has 50 assets' predictions to score). The server is
stopped and the other assets are copied, in SQLite, from those engines' rows (state snapshot,
latest prediction with its RUL spread so the ranking is not a tie, no readings of their own:
the snapshot is all the next cycle needs). The server restarts on the database with every
asset resumed from its snapshot.

Per number of readers (each a loop of ``GET /`` on its own keep-alive connection, as fast as
the server answers):

* **single**: ``--clients`` concurrent clients, one reading a request, each to a copied asset's
  next cycle (its engine's last reading again: the values do not change the work);
* **fleet**: one client posting the next cycle of ``--fleet-size`` copied assets a request;

and first, **readers alone** (the most readers, no writes): the pages/s and the server's CPU
share the dashboard takes of an otherwise idle server.

The numbers of readers take turns (0, 8, 0, 8 with ``--repeats 2``) on the same server, so a
change in the machine's other load falls on both. Printed per turn and then as the median of
the turns: acknowledged readings/s, ack p50/p99 (client side), errors, the dashboard's pages/s
and page p50/p99, readings/s against the same scenario without readers, and the server
process's CPU time over the turn (cores used, and CPU ms per 1000 acknowledged readings: what
the readers add to it is the dashboard's cost, less sensitive to the machine's other load than
throughput is).
Client, readers and server share the machine's cores (``describe`` of the CPU is printed and
written with the JSON).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from results_file import print_rows, write_results
from serve_load import Server

#: The engines the copies are made from (FD001's test set) and how many of them have failed.
SUBSET, FAILED = "FD001", 50


def fd001_engines(data_dir: Path) -> tuple[dict[str, list[dict]], dict[str, int]]:
    """Asset id -> its readings (API dicts), and asset id -> its true end of life (the last
    cycle plus the RUL file's value)."""
    from amnl.data.cmapss import COLUMNS, load_subset

    subset = load_subset(data_dir, SUBSET, train=False)
    test, truth = subset.test, subset.rul
    fleet, end = {}, {}
    for i, u in enumerate(test.units):
        rows = test.values[test.unit == u]
        name = f"{SUBSET}-{int(u)}"
        fleet[name] = [{"cycle": int(r[1]), **{c: float(v) for c, v in zip(COLUMNS[2:], r[2:])}}
                       for r in rows]
        end[name] = int(rows[-1, 1]) + int(truth[i])
    return fleet, end


def seed_engines(server: Server, fleet: dict[str, list[dict]], end: dict[str, int]) -> None:
    """Every engine's whole trajectory, one cycle of the fleet a request; the first
    :data:`FAILED` engines' failures; returns once every reading is predicted."""
    import httpx

    with httpx.Client(base_url=server.url, timeout=120) as c:
        for k in range(max(map(len, fleet.values()))):
            body = [{"asset_id": a, **rows[k]} for a, rows in fleet.items() if k < len(rows)]
            c.post("/v1/readings", json={"readings": body}).raise_for_status()
        deadline = time.monotonic() + 300
        while True:
            readings, preds = server.counts()
            if readings == preds or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        for a in list(fleet)[:FAILED]:
            c.post(f"/v1/assets/{a}/failure", json={"cycle": end[a]}).raise_for_status()


def copy_assets(db: Path, n: int) -> list[tuple[str, int, dict]]:
    """Copy the stored engines into ``n`` assets in all; returns the copies as (asset id, next
    cycle, the reading to send)."""
    rng = np.random.default_rng(0)
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    cols = [r[1] for r in conn.execute("PRAGMA table_info(assets)")]
    originals = [dict(r) for r in conn.execute("SELECT * FROM assets WHERE failure_cycle IS NULL "
                                               "ORDER BY asset_id")]
    last = {r["asset_id"]: dict(r) for r in conn.execute(
        "SELECT r.* FROM readings r JOIN assets a ON a.asset_id = r.asset_id "
        "AND a.last_cycle = r.cycle")}
    total = conn.execute("SELECT count(*) FROM assets").fetchone()[0]
    rows, copies = [], []
    for i in range(n - total):
        src = originals[i % len(originals)]
        row = {**src, "asset_id": f"copy-{i:06d}-{src['asset_id']}"}
        shift = float(rng.uniform(-20, 20))  # spread the ranking
        for k in ("rul", "rul_lower", "rul_upper"):
            if row[k] is not None:
                row[k] = max(row[k] + shift, 0.0)
        rows.append(tuple(row[c] for c in cols))
        reading = {k: v for k, v in last[src["asset_id"]].items()
                   if k not in ("asset_id", "cycle", "features", "received_at")}
        copies.append((row["asset_id"], src["last_cycle"] + 1, reading))
    with conn:
        conn.executemany(f"INSERT INTO assets ({', '.join(cols)}) VALUES "
                         f"({', '.join('?' * len(cols))})", rows)
    conn.close()
    return copies


async def readers_loop(url: str, n: int, stop: asyncio.Event) -> dict:
    """``n`` clients each loading ``/`` in a loop until ``stop``."""
    import aiohttp

    latencies, errors = [], 0

    async def reader(session) -> None:
        nonlocal errors
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                async with session.get("/") as r:
                    await r.read()
                    ok = r.status == 200
            except aiohttp.ClientError:
                ok = False
            if ok:
                latencies.append(time.perf_counter() - t0)
            else:
                errors += 1

    t0 = time.perf_counter()
    async with aiohttp.ClientSession(url, timeout=aiohttp.ClientTimeout(total=120)) as session:
        await asyncio.gather(*(reader(session) for _ in range(n)))
    return {"pages": len(latencies), "page_errors": errors, "latencies": latencies,
            "seconds": time.perf_counter() - t0}


async def single_posts(url: str, copies: list, clients: int, seconds: float) -> dict:
    """``clients`` workers; each post is one copied asset's next cycle (each asset once)."""
    import aiohttp

    queue = iter(copies)
    latencies, errors = [], 0
    stop_at = time.perf_counter() + seconds

    async def worker(session) -> None:
        nonlocal errors
        for asset, cycle, reading in queue:
            if time.perf_counter() >= stop_at:
                return
            body = json.dumps({"readings": [{"cycle": cycle, **reading}]})
            t0 = time.perf_counter()
            async with session.post(f"/v1/assets/{asset}/readings", data=body,
                                    headers={"content-type": "application/json"}) as r:
                await r.read()
                if r.status == 200:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors += 1

    t0 = time.perf_counter()
    async with aiohttp.ClientSession(url, connector=aiohttp.TCPConnector(limit=clients),
                                     timeout=aiohttp.ClientTimeout(total=120)) as session:
        await asyncio.gather(*(worker(session) for _ in range(clients)))
    return {"acked": len(latencies), "errors": errors, "latencies": latencies,
            "seconds": time.perf_counter() - t0}


async def fleet_posts(url: str, copies: list, size: int, seconds: float) -> dict:
    """One client; each request the next cycle of ``size`` copied assets."""
    import aiohttp

    latencies, errors, acked = [], 0, 0
    t0 = time.perf_counter()
    async with aiohttp.ClientSession(url, timeout=aiohttp.ClientTimeout(total=120)) as session:
        for k in range(0, len(copies), size):
            if time.perf_counter() - t0 >= seconds:
                break
            body = json.dumps({"readings": [{"asset_id": a, "cycle": c, **r}
                                            for a, c, r in copies[k:k + size]]})
            s = time.perf_counter()
            async with session.post("/v1/readings", data=body,
                                    headers={"content-type": "application/json"}) as r:
                out = await r.read()
                if r.status == 200:
                    acked += json.loads(out)["accepted"]
                    latencies.append(time.perf_counter() - s)
                else:
                    errors += 1
    return {"acked": acked, "errors": errors, "latencies": latencies,
            "seconds": time.perf_counter() - t0}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (``/proc/PID/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measured(url: str, n_readers: int, load) -> dict:
    """Run ``load`` (a coroutine) with ``n_readers`` dashboard readers beside it."""
    stop = asyncio.Event()
    readers = asyncio.ensure_future(readers_loop(url, n_readers, stop)) if n_readers else None
    if readers:
        await asyncio.sleep(0.5)  # the readers are loading pages before the writes start
    res = await load
    stop.set()
    pages = await readers if readers else {"pages": 0, "page_errors": 0, "latencies": [],
                                            "seconds": res["seconds"]}
    return res, pages


def turn(server: Server, name: str, n_readers: int, load) -> dict:
    """One scenario with ``n_readers`` readers, once the last one's readings are predicted;
    the server's CPU time is measured over it."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(set(server.counts())) > 1:  # readings, predictions
        time.sleep(0.2)
    cpu0 = cpu_seconds(server.proc.pid)
    res, pages = asyncio.run(measured(server.url, n_readers, load))
    res["server_cpu_s"] = cpu_seconds(server.proc.pid) - cpu0
    return summarise(name, n_readers, res, pages)


def summarise(name: str, n_readers: int, res: dict, pages: dict) -> dict:
    lat = np.array(res.pop("latencies")) * 1000
    plat = np.array(pages.pop("latencies")) * 1000
    return {"scenario": name, "readers": n_readers, **res,
            "readings_per_s": res["acked"] / res["seconds"],
            "server_cpu_share": res["server_cpu_s"] / res["seconds"],
            "cpu_ms_per_1000": 1e6 * res["server_cpu_s"] / res["acked"] if res["acked"] else None,
            "ack_p50_ms": float(np.percentile(lat, 50)) if len(lat) else None,
            "ack_p99_ms": float(np.percentile(lat, 99)) if len(lat) else None,
            "pages": pages["pages"], "page_errors": pages["page_errors"],
            "pages_per_s": pages["pages"] / pages["seconds"] if n_readers else None,
            "page_p50_ms": float(np.percentile(plat, 50)) if len(plat) else None,
            "page_p99_ms": float(np.percentile(plat, 99)) if len(plat) else None}


def print_table(rows: list[dict]) -> None:
    cols = [("scenario", "{}"), ("readers", "{}"), ("readings_per_s", "{:.0f}"),
            ("vs_no_readers", "{:.0%}"), ("ack_p50_ms", "{:.1f}"), ("ack_p99_ms", "{:.1f}"),
            ("errors", "{}"), ("server_cpu_share", "{:.2f}"), ("cpu_ms_per_1000", "{:.0f}"),
            ("pages_per_s", "{:.1f}"), ("page_p50_ms", "{:.1f}"),
            ("page_p99_ms", "{:.1f}"), ("page_errors", "{}")]
    print_rows(rows, cols)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, default=Path("../shared/data/CMAPSS"))
    ap.add_argument("--assets", type=int, default=50_000)
    ap.add_argument("--readers", default="0,8", help="numbers of dashboard readers")
    ap.add_argument("--clients", type=int, default=16, help="single-post clients")
    ap.add_argument("--fleet-size", type=int, default=700, help="readings a fleet post")
    ap.add_argument("--seconds", type=float, default=6.0, help="per scenario and turn")
    ap.add_argument("--repeats", type=int, default=2, help="turns of each number of readers")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    from amnl.export.onnx import export_run
    from amnl.profiling.machine import describe, machine_info
    from amnl.rundir import ONNX_FILES, resolve_source

    folder = Path(tempfile.mkdtemp(prefix="amnl-dashboard-load-"))
    model = folder / "model"
    export_run(resolve_source("FD001"), model / ONNX_FILES["fp32"])
    readers = [int(r) for r in args.readers.split(",")]
    results = {"machine": machine_info(), "assets": args.assets, "clients": args.clients,
               "fleet_size": args.fleet_size, "seconds": args.seconds,
               "command": " ".join([os.path.relpath(sys.argv[0]), *sys.argv[1:]]), "rows": []}
    rows = results["rows"]
    try:
        fleet, end = fd001_engines(args.data_dir)
        server = Server(model, "fp32", True, folder)
        try:
            seed_engines(server, fleet, end)
        finally:
            server.stop()
        copies = copy_assets(server.db, args.assets)
        t0 = time.perf_counter()
        server = Server(model, "fp32", True, folder, db=server.db)
        results["restart_s"] = time.perf_counter() - t0
        try:
            import httpx

            results["assets_served"] = httpx.get(server.url + "/readyz").json()["assets"]
            t0 = time.perf_counter()
            httpx.get(server.url + "/", timeout=120).raise_for_status()
            results["first_page_s"] = time.perf_counter() - t0
            # readers and no readers take turns (the machine's other load changes over time);
            # each scenario takes fresh copies: an asset's next cycle is posted once
            # the readers alone first: what the dashboard takes of an otherwise idle server
            idle = max(readers)
            rows.append(turn(server, "readers alone", idle, asyncio.sleep(
                args.seconds, result={"acked": 0, "errors": 0, "latencies": [],
                                      "seconds": args.seconds})))
            print_table(rows[-1:])
            turns = [n for _ in range(args.repeats) for n in readers]
            per = len(copies) // (2 * len(turns))
            for i, n in enumerate(turns):
                batch = copies[2 * i * per:(2 * i + 1) * per]
                rows.append(turn(server, f"single x{args.clients}", n, single_posts(
                    server.url, batch, args.clients, args.seconds)))
                print_table(rows[-1:])
                batch = copies[(2 * i + 1) * per:(2 * i + 2) * per]
                rows.append(turn(server, f"fleet ({args.fleet_size} a request)", n, fleet_posts(
                    server.url, batch, args.fleet_size, args.seconds)))
                print_table(rows[-1:])
        finally:
            server.stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    # per scenario and number of readers: the median of the turns, against no readers'
    results["summary"] = summary = []
    for name in dict.fromkeys(r["scenario"] for r in rows):
        for n in readers:
            turns = [r for r in rows if r["scenario"] == name and r["readers"] == n]
            if not turns:
                continue
            summary.append({"scenario": name, "readers": n, "turns": len(turns), **{
                k: float(np.median([r[k] for r in turns])) if turns[0][k] is not None else None
                for k in ("readings_per_s", "ack_p50_ms", "ack_p99_ms", "server_cpu_share",
                          "cpu_ms_per_1000", "pages_per_s", "page_p50_ms", "page_p99_ms")},
                "errors": sum(r["errors"] for r in turns),
                "page_errors": sum(r["page_errors"] for r in turns)})
    base = {r["scenario"]: r["readings_per_s"] for r in summary if r["readers"] == 0}
    for r in summary:
        if base.get(r["scenario"]):
            r["vs_no_readers"] = r["readings_per_s"] / base[r["scenario"]]
    print()
    print(f"{results['assets_served']} assets, restart {results['restart_s']:.1f} s, first page "
          f"{results['first_page_s'] * 1000:.0f} ms; medians of {args.repeats} turns:")
    print_table(summary)
    print(describe(results["machine"]))
    write_results(results, args.out, "dashboard-load")


if __name__ == "__main__":
    main()
