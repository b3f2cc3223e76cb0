"""The profiler on the tiny model: per-layer bytes against analytic tensor sizes, composition,
the report and JSON, the training step, fresh-process RSS, auto-chunked inference, the CLI.

Nothing here is timing-based: latencies are measured but never compared.
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from amnl.cli.app import app
from amnl.inference.runtime import TorchRuntime
from amnl.model.factory import create_model
from amnl.profiling.memory import (
    make_input,
    measure_call_peak,
    measure_memory,
    prepare_model,
    weight_bytes,
)
from amnl.profiling.report import LAYER_TYPES, load_fits, profile_inference
from amnl.profiling.rss import measure_rss
from amnl.profiling.train_step import measure_training_step

B, W, F = 4, 30, 14


@pytest.fixture(autouse=True)
def one_thread():
    # On a busy 2-core machine two OpenMP threads can wait on each other for seconds per LSTM.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return create_model("tiny")


def _analytic(cfg, batch: int, window: int, elem: int) -> tuple[dict, dict]:
    """(output bytes, created-activation bytes) per component, from the config alone."""
    d = 2 * cfg.lstm_hidden
    hidden_state = 2 * cfg.lstm_layers * batch * cfg.lstm_hidden * elem  # h_n or c_n
    out = {"cnn": batch * cfg.cnn_channels[-1] * window * elem,
           "lstm": batch * window * d * elem + 2 * hidden_state,
           "attention": batch * d * elem,  # the last step only (inference form)
           "funnel": batch * cfg.funnel[-1] * elem,
           "rul_head": batch * 1 * elem,
           "health_head": batch * cfg.n_health * elem}
    # the inference form's conv block (amnl.model.network.ConvBlock.time_last): BatchNorm
    # folded into the weights (3 + 3 tensors of C_out, the scaled and the reordered weights),
    # the tap index (int64: T steps, 3 offsets, T x 3), then the padded input, the gathered
    # taps, the product, + bias, ReLU; every hidden Linear and its ReLU make one; the last
    # Linear of a head makes one.
    chans = [cfg.in_features, *cfg.cnn_channels]
    index = 8 * (window + 3 + 3 * window)
    act = {"cnn": sum(index + (6 * co + 6 * ci * co + batch * (window + 2) * ci
                               + 3 * batch * window * ci + 3 * batch * window * co) * elem
                      for ci, co in itertools.pairwise(chans)),
           "funnel": sum(2 * batch * w * elem for w in cfg.funnel),
           "rul_head": sum(2 * batch * w * elem for w in cfg.rul_head) + batch * elem,
           "health_head": (sum(2 * batch * w * elem for w in cfg.health_head)
                           + batch * cfg.n_health * elem)}
    return out, act


@pytest.mark.parametrize("precision,elem,window", [("fp32", 4, 30), ("fp32", 4, 50), ("bf16", 2, 30)])
def test_layer_bytes_match_analytic_tensor_sizes(tiny, precision, elem, window):
    model = prepare_model(tiny, precision)
    m = measure_memory(model, make_input(B, window, F, precision))
    out, act = _analytic(tiny.config, B, window, elem)
    assert {k: v.output for k, v in m.layers.items()} == out
    for name, expected in act.items():
        assert m.layers[name].activations == expected, name
    for name in ("lstm", "attention"):  # their kernels' internals vary with the backend
        assert m.layers[name].activations >= m.layers[name].output
    counts = tiny.parameter_counts()
    for name in ("lstm", "attention", "funnel", "rul_head", "health_head"):
        assert m.layers[name].weights == counts[name] * elem
    assert m.layers["cnn"].weights > counts["cnn"] * elem  # plus batch-norm statistics


def test_composition_adds_up_and_tensor_peak_bounds(tiny):
    model = prepare_model(tiny, "fp32")
    x = make_input(8, W, F)
    m = measure_memory(model, x)
    assert m.weights == weight_bytes(model) == sum(v.weights for v in m.layers.values())
    assert m.inputs == 8 * W * F * 4
    assert m.peak == m.weights + m.inputs + m.activations + m.workspace
    assert m.activations >= max(v.output for v in m.layers.values())
    assert m.activations <= sum(v.activations for v in m.layers.values()) + 2 * m.inputs
    assert all(v.allocator_peak is not None and v.allocator_peak >= 0 for v in m.layers.values())
    assert m.reserved is None and m.cuda_context is None


def test_memory_scales_with_batch_and_int8_shrinks_weights(tiny):
    small = measure_memory(prepare_model(tiny, "fp32"), make_input(4, W, F))
    mid = measure_memory(prepare_model(tiny, "fp32"), make_input(8, W, F))
    big = measure_memory(prepare_model(tiny, "fp32"), make_input(32, W, F))
    cnn = [m.layers["cnn"].activations for m in (small, mid, big)]  # a fixed part (folding)
    assert cnn[2] - cnn[0] == 7 * (cnn[1] - cnn[0]) > 0  # + a part linear in the batch
    assert big.peak > small.peak
    q = measure_memory(prepare_model(tiny, "int8"), make_input(4, W, F))
    assert q.layers["lstm"].weights < small.layers["lstm"].weights / 3


def test_profile_report_fits_and_json(tiny, tmp_path):
    report = profile_inference(tiny, precisions=["fp32"], windows=[30], batch_sizes=[1, 4, 16],
                               warmup=0, repeats=1)
    assert [(r.precision, r.window, r.batch) for r in report.rows] == [("fp32", 30, 1),
                                                                      ("fp32", 30, 4),
                                                                      ("fp32", 30, 16)]
    fit = report.fit_for("fp32", 30)
    assert fit.memory.per_sample > 0 and 0.9 < fit.memory.r2 <= 1.0
    assert fit.memory.resident == report.rows[0].memory.weights
    data = report.to_dict()
    row = data["rows"][0]
    for key in ("weights", "activations", "workspace", "peak", "latency_p50_ms", "throughput"):
        assert key in row
    assert set(row["layer_types"]) == set(LAYER_TYPES)
    assert "per_sample" in data["fits"][0] and data["method"]["cpu_peak"]
    path = tmp_path / "p.json"
    report.save_json(path)
    assert load_fits(path)[0].memory == fit.memory
    with pytest.raises(ValueError, match="no fit for precision int8"):
        report.fit_for("int8", 30)


def test_training_step_checkpointing_saves_less(tiny):
    plain = measure_training_step(tiny, batch=8, repeats=0)
    ckpt = measure_training_step(tiny, batch=8, grad_checkpoint=True, repeats=0)
    assert ckpt.saved_activations < plain.saved_activations
    params = list(tiny.parameters())
    # AdamW keeps exp_avg and exp_avg_sq (FP32, like each parameter) and a scalar step
    step_bytes = plain.optimizer_state - sum(2 * p.numel() * 4 for p in params)
    assert step_bytes % len(params) == 0 and step_bytes // len(params) in (4, 8)
    assert plain.peak >= plain.weights + plain.optimizer_state


def test_fresh_process_rss_has_ordered_stages():
    rss = measure_rss({"size": "tiny"}, batches=(4,), threads=1)
    s = rss.stages
    assert list(s) == ["python", "import_torch", "import_amnl", "model", "prepared", "inference"]
    assert s["import_torch"] > s["python"] and rss.peak == s["inference"]
    assert rss.torch_imported and rss.final["VmRSS"] > 0


def test_fresh_process_rss_of_an_onnx_export_never_imports_torch(tmp_path):
    """The RSS child is a real module (``python -m amnl.profiling.rss``); on an exported file it
    runs ONNX Runtime without torch."""
    pytest.importorskip("onnxruntime")
    from amnl.inference.onnx_runtime import OnnxRuntime

    torch.manual_seed(0)
    path = OnnxRuntime.from_model(create_model("tiny"), None, W, cache_dir=tmp_path).path
    rss = measure_rss({"onnx": path}, batches=(1, 8), mode="runtime", threads=1)
    assert not rss.torch_imported and "import_torch" not in rss.stages
    assert rss.peak == max(rss.stages.values()) > rss.stages["python"]


def test_auto_batch_engine_chunks_within_budget_and_matches(tiny):
    x = np.random.default_rng(0).standard_normal((64, W, F)).astype(np.float32)
    fixed = TorchRuntime(tiny, batch_size=64)
    auto = TorchRuntime(tiny, batch_size="auto", memory_budget_mb=0.5)
    r_fixed, r_auto = fixed(x), auto(x)
    np.testing.assert_allclose(r_auto[0], r_fixed[0], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(r_auto[1], r_fixed[1], rtol=1e-5, atol=1e-6)
    chunk = auto.last_batch_size
    assert 1 <= chunk < 64 and auto.memory_fit.upper(chunk) <= 0.5e6
    assert measure_call_peak(lambda: auto(x)) < measure_call_peak(lambda: fixed(x))
    assert TorchRuntime(tiny, batch_size=0).auto and not fixed.auto
    with pytest.raises(ValueError, match="batch_size"):
        TorchRuntime(tiny, batch_size=-3)


def test_profile_command_writes_json_and_table(tmp_path):
    out = tmp_path / "profile.json"
    r = CliRunner().invoke(app, ["profile", "--random-init", "--size", "tiny", "--batch-sizes",
                                 "1,4", "--window", "30", "--precision", "fp32", "--repeats", "1",
                                 "--warmup", "0", "--no-rss", "--threads", "1", "--json", str(out)])
    assert r.exit_code == 0, r.output
    assert "per sample MB" in r.output and "by layer type" in r.output
    data = json.loads(out.read_text())
    assert data["model"]["source"] == "random-init"
    assert {"weights", "activations"} <= set(data["rows"][0]) and "per_sample" in data["fits"][0]


def test_profile_command_errors():
    r = CliRunner().invoke(app, ["profile", "--random-init", "--weights", "FD001"])
    assert r.exit_code == 2 and "at most one of" in r.output
    r = CliRunner().invoke(app, ["profile", "--random-init", "--size", "tiny", "--precision",
                                 "fp64", "--no-rss"])
    assert r.exit_code == 2 and "precision must be among" in r.output
    r = CliRunner().invoke(app, ["profile", "--random-init", "--batch-sizes", "1,x"])
    assert r.exit_code == 2 and "--batch-sizes must be a comma-separated list" in r.output


def test_auto_batch_engine_survives_a_running_profiler(tiny):
    x = np.zeros((16, W, F), np.float32)
    engine = TorchRuntime(tiny, batch_size="auto")
    with torch.autograd.profiler.profile():
        rul, _ = engine(x)
    assert rul.shape == (16,) and engine.memory_fit is None  # fell back, calibrates next time
    engine(x)
    assert engine.memory_fit is not None


def test_plan_command_measures_when_given_no_profile():
    r = CliRunner().invoke(app, ["plan", "--memory-mb", "1", "--random-init", "--size", "tiny",
                                 "--threads", "1", "--no-power-of-two", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["plan"]["predicted_bytes"] <= 1e6 and out["plan"]["batch_size"] >= 1
    assert out["fit"]["max_measured_batch"] == 256
