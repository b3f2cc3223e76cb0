"""The memory line and the batch-size planner: fits, guarantees, free memory, the `plan` command."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from amnl.cli.app import app
from amnl.inference import planner
from amnl.inference.planner import (
    LatencyFit,
    MemoryFit,
    batch_size_for_free_memory,
    fit_latency,
    fit_memory,
    free_memory_bytes,
    plan_batch,
)

MB = 1e6


def test_fit_recovers_a_known_line():
    batches = [1, 8, 32, 64, 128, 256, 512]
    fit = fit_memory(batches, [14e6 + 1.8e6 * b for b in batches], resident=14e6)
    assert fit.base == pytest.approx(14e6) and fit.per_sample == pytest.approx(1.8e6)
    assert fit.r2 == pytest.approx(1.0) and fit.max_residual == pytest.approx(0.0, abs=1e-3)
    assert fit.resident == 14e6 and fit.max_measured_batch == 512


def test_fit_with_noise_is_close_and_r2_reflects_it():
    rng = np.random.default_rng(0)
    batches = np.array([1, 8, 32, 64, 128, 256, 512])
    y = 20e6 + 0.4e6 * batches + rng.normal(0, 0.5e6, len(batches))
    fit = fit_memory(batches, y)
    assert fit.per_sample == pytest.approx(0.4e6, rel=0.02)
    assert 0.99 < fit.r2 < 1.0
    assert fit.max_residual == pytest.approx(max(y - fit.predict(batches)))


def test_fit_needs_two_distinct_batches():
    with pytest.raises(ValueError, match="two distinct"):
        fit_memory([64, 64], [1.0, 2.0])
    with pytest.raises(ValueError, match="equal length"):
        fit_memory([1, 2, 3], [1.0, 2.0])


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("power_of_two", [True, False])
def test_planner_never_returns_a_batch_the_measured_curve_rejects(seed, power_of_two):
    # A convex, noisy "measured" curve: a straight line would be optimistic in places.
    rng = np.random.default_rng(seed)
    batches = np.array([1, 8, 32, 64, 128, 256, 512])
    measured = (rng.uniform(5, 20) * MB + rng.uniform(0.1, 2) * MB * batches
                + rng.uniform(0, 2e3) * batches ** 2 + rng.normal(0, 0.3 * MB, len(batches)))
    fit = fit_memory(batches, measured)
    for budget in rng.uniform(measured[0] + 0.5 * MB, measured[-1] * 1.2, size=25):
        try:
            plan = plan_batch(fit, budget, max_batch=512, power_of_two=power_of_two)
        except ValueError:
            assert fit.upper(1) > budget
            continue
        assert plan.predicted_bytes <= budget
        # every measured point at or below the planned batch fits the budget
        assert all(m <= budget for b, m in zip(batches, measured) if b <= plan.batch_size)
        if power_of_two:
            assert plan.batch_size & (plan.batch_size - 1) == 0
        nxt = plan.batch_size * 2 if power_of_two else plan.batch_size + 1
        assert plan.limited_by == "cap" or fit.upper(nxt) > budget


def test_planner_cap_limit_and_too_small_memory():
    fit = MemoryFit(base=14 * MB, per_sample=0.25 * MB, r2=1.0)
    assert plan_batch(fit, 16e9).batch_size == 256 and plan_batch(fit, 16e9).limited_by == "cap"
    assert plan_batch(fit, 40 * MB).batch_size == 64
    assert plan_batch(fit, 40 * MB, power_of_two=False).batch_size == 104
    assert plan_batch(fit, 40 * MB).limited_by == "memory"
    with pytest.raises(ValueError, match="batch 1 needs 14.2 MB but only 10.0 MB"):
        plan_batch(fit, 10 * MB)


def test_planner_latency_budget_and_throughput():
    fit = MemoryFit(base=14 * MB, per_sample=0.25 * MB, r2=1.0)
    lat = fit_latency([1, 64, 256], [2.0, 8.3, 27.5])
    assert lat.per_sample_ms == pytest.approx(0.1, rel=0.01)
    plan = plan_batch(fit, 1e9, latency=lat, latency_budget_ms=10.0, power_of_two=False)
    assert lat.predict(plan.batch_size) <= 10.0 < lat.predict(plan.batch_size + 1)
    assert plan.limited_by == "latency"
    assert plan.throughput == pytest.approx(plan.batch_size / plan.latency_ms * 1000)
    with pytest.raises(ValueError, match="latency"):
        plan_batch(fit, 1e9, latency_budget_ms=10.0)
    with pytest.raises(ValueError, match="over the latency budget"):
        plan_batch(fit, 1e9, latency=LatencyFit(5.0, 0.1, 1.0), latency_budget_ms=1.0)


def test_batch_size_for_free_memory_uses_free_memory_and_budget():
    fit = MemoryFit(base=14 * MB, per_sample=1 * MB, r2=1.0, resident=14 * MB)
    # half of 100 MB free is 50 MB, plus the 14 MB the weights already hold: 50 windows
    assert batch_size_for_free_memory(fit, free_bytes=100 * MB, power_of_two=False) == 50
    assert batch_size_for_free_memory(fit, free_bytes=100 * MB, budget_bytes=30 * MB,
                                      power_of_two=False) == 16
    assert batch_size_for_free_memory(fit, free_bytes=1 * MB) == 1  # nothing fits: still runs
    assert batch_size_for_free_memory(fit, free_bytes=10**12) == 256  # the cap


def test_batch_size_falls_back_when_free_memory_is_unknown(monkeypatch):
    monkeypatch.setattr(planner, "free_memory_bytes", lambda device="cpu": None)
    fit = MemoryFit(base=14 * MB, per_sample=1 * MB, r2=1.0)
    assert batch_size_for_free_memory(fit) == planner.FALLBACK_BATCH
    assert batch_size_for_free_memory(fit, budget_bytes=20 * MB, power_of_two=False) == 6


def test_free_memory_reads_meminfo_then_falls_back(tmp_path, monkeypatch):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24684000 kB\nMemFree:  1000 kB\nMemAvailable:   2048 kB\n")
    monkeypatch.setattr(planner, "MEMINFO", meminfo)
    assert free_memory_bytes("cpu") == 2048 * 1024
    monkeypatch.setattr(planner, "MEMINFO", tmp_path / "missing")
    free = free_memory_bytes("cpu")
    assert free is None or free > 0


def _profile_json(tmp_path):
    path = tmp_path / "profile.json"
    fit = {"precision": "fp32", "window": 30, "device": "cpu", "base": 17.2e6,
           "per_sample": 0.39e6, "r2": 0.999, "max_residual": 0.1e6, "resident": 14e6,
           "max_measured_batch": 512, "latency_base_ms": 3.0, "latency_per_sample_ms": 1.3,
           "latency_r2": 0.99}
    path.write_text(json.dumps({"rows": [], "fits": [fit]}))
    return path


def test_plan_command_from_profile_file(tmp_path):
    path = _profile_json(tmp_path)
    r = CliRunner().invoke(app, ["plan", "--memory-mb", "40", "--profile", str(path),
                                 "--no-power-of-two"])
    assert r.exit_code == 0, r.output
    assert "batch size 58 (limited by memory)" in r.output and "windows/s" in r.output
    r = CliRunner().invoke(app, ["plan", "--memory-mb", "40", "--profile", str(path), "--json"])
    plan = json.loads(r.output)["plan"]
    assert plan["batch_size"] == 32 and plan["predicted_bytes"] <= 40e6


def test_plan_targets_table(tmp_path):
    r = CliRunner().invoke(app, ["plan", "--targets", "--profile", str(_profile_json(tmp_path)),
                                 "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)["targets"]
    assert [row["memory_mb"] for row in rows] == [16000, 4000, 2000, 500]
    assert all(row["study_batch"] == 256 for row in rows)  # 14 + 1.8 x 256 = 475 MB fits 500
    assert rows[-1]["batch"] == 256 and rows[-1]["predicted_mb"] <= 500
    # beside the tensor memory, what the whole process needs (a fresh process measured at batch 1)
    assert all(row["process_mb"] > row["predicted_mb"] + 50 for row in rows)


def test_plan_says_when_the_latency_budget_limits_the_largest_batch(tmp_path):
    r = CliRunner().invoke(app, ["plan", "--memory-mb", "500", "--profile", str(_profile_json(tmp_path)),
                                 "--no-power-of-two", "--latency-budget-ms", "100"])
    assert r.exit_code == 0, r.output
    # memory allows (500 - 17.3) / 0.39 = 1237 windows; 100 ms allows (100 - 3) / 1.3 = 74
    assert "largest batch the memory allows without the 256 cap: 1237" in r.output
    assert "the latency budget of 100 ms limits it to 74" in r.output


def test_plan_command_errors(tmp_path):
    r = CliRunner().invoke(app, ["plan"])
    assert r.exit_code == 2 and "error: give either --memory-mb N or --targets" in r.output
    r = CliRunner().invoke(app, ["plan", "--memory-mb", "1", "--profile",
                                 str(_profile_json(tmp_path))])
    assert r.exit_code == 2 and "batch 1 needs" in r.output
    r = CliRunner().invoke(app, ["plan", "--memory-mb", "40", "--profile",
                                 str(_profile_json(tmp_path)), "--window", "50"])
    assert r.exit_code == 2 and "no fit for fp32 window 50" in r.output


def test_onnx_chunk_follows_the_memory_limit():
    from amnl.inference.onnx_runtime import DEFAULT_CHUNK, auto_chunk

    assert auto_chunk(30, 24 * 10**9) == DEFAULT_CHUNK
    assert [auto_chunk(30, mb * 10**6) for mb in (512, 256, 128, 64)] == [64, 32, 16, 8]
    assert auto_chunk(50, 128 * 10**6) < auto_chunk(30, 128 * 10**6)  # longer windows, fewer
    assert auto_chunk(30, 1) == 8  # never below the smallest choice


def test_memory_limit_is_the_cgroup_limit_when_smaller(tmp_path):
    """A real cgroup v1 memory cgroup (root and a writable controller, else skipped): a
    process inside it sees the cgroup's limit, and its ONNX runtime picks a smaller chunk."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from amnl.inference.planner import memory_limit_bytes

    root = Path("/sys/fs/cgroup/memory")
    if os.geteuid() != 0 or not (root / "memory.limit_in_bytes").is_file():
        pytest.skip("needs root and a cgroup v1 memory controller")
    total = memory_limit_bytes()
    assert total is not None and total > 128 * 10**6
    group = root / f"amnl-test-{os.getpid()}"
    try:
        group.mkdir()
    except OSError as exc:
        pytest.skip(f"cannot make a memory cgroup: {exc}")
    try:
        (group / "memory.limit_in_bytes").write_text(str(200 * 10**6))
        code = ("from amnl.inference.planner import memory_limit_bytes; "
                "from amnl.inference.onnx_runtime import auto_chunk; "
                "print(memory_limit_bytes(), auto_chunk(30))")
        out = subprocess.run(["sh", "-c", f'echo $$ > {group}/cgroup.procs && exec "$@"', "sh",
                              sys.executable, "-c", code], capture_output=True, text=True,
                             check=True).stdout.split()
        limit = (group / "memory.limit_in_bytes").read_text().strip()  # rounded to pages
        assert out == [limit, "32"] and abs(int(limit) - 200 * 10**6) < 10**5
    finally:
        group.rmdir()


def test_latency_fit_never_has_a_negative_cost_per_window(caplog):
    """#26 item 20: on a busy machine batch 1 (measured first) was slowed by other processes
    and least squares gave a negative "ms / sample" in `amnl profile`; the fit keeps both
    coefficients >= 0 and says why."""
    slowed = fit_latency([1, 8, 32], [6.1, 3.9, 4.2])  # figures of that kind of run
    assert slowed.per_sample_ms >= 0 and slowed.base_ms >= 0
    assert slowed.per_sample_ms == 0.0 and slowed.base_ms == pytest.approx((6.1 + 3.9 + 4.2) / 3)
    assert "the machine looks busy" in caplog.text
    # a line that would start below zero goes through the origin instead
    steep = fit_latency([1, 8, 32], [0.1, 0.2, 6.0])
    assert steep.base_ms == 0.0 and steep.per_sample_ms > 0
    caplog.clear()
    clean = fit_latency([1, 8, 32], [1.0, 2.4, 7.2])  # a plausible line is left alone
    assert clean.per_sample_ms == pytest.approx(0.2, abs=1e-3) and "busy" not in caplog.text


def test_plan_says_what_the_whole_process_needs(tmp_path):
    """#26 item 20: `amnl plan --memory-mb 128` said batch 256 fits without saying that the
    process itself needs a few hundred MB; it now measures a fresh process at batch 1 and says
    so, with a warning when the whole process does not fit."""
    path = str(_profile_json(tmp_path))
    r = CliRunner().invoke(app, ["plan", "--memory-mb", "128", "--profile", path, "--random-init",
                                 "--size", "tiny", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    floor, whole = out["process_floor_bytes"], out["process_bytes"]
    assert out["plan"]["batch_size"] == 256 and floor > 128e6  # Python + torch alone
    assert whole == pytest.approx(floor + out["plan"]["predicted_bytes"] - 17.3e6 - 0.39e6, rel=1e-6)
    assert out["process_fits"] is False
    r = CliRunner().invoke(app, ["plan", "--memory-mb", "128", "--profile", path, "--random-init",
                                 "--size", "tiny"])
    assert r.exit_code == 0, r.output
    assert f"the process itself needs about {floor / 1e6:.0f} MB" in r.stdout
    assert "the process does not fit in 128 MB" in r.stderr
    r = CliRunner().invoke(app, ["plan", "--memory-mb", "128", "--profile", path, "--no-process",
                                 "--json"])
    assert json.loads(r.stdout)["process_bytes"] is None
