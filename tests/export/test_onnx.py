"""ONNX export and the ONNX Runtime engine: parity with PyTorch, INT8 coverage, cache, CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import torch
from typer.testing import CliRunner

from amnl.cli.app import app
from amnl.config import DataConfig, InferenceConfig, RunConfig, TrainConfig
from amnl.data.cmapss import load_subset
from amnl.data.synthetic import write_fleet
from amnl.export import onnx as ox
from amnl.inference.onnx_runtime import ONNX_PRECISIONS, OnnxRuntime
from amnl.inference.predictor import Predictor
from amnl.inference.runtime import TorchRuntime
from amnl.model.factory import MODEL_SIZES, create_model
from amnl.rundir import CALIBRATION_FILE, DRIFT_FILE, ONNX_FILES, load_run
from amnl.train.run import train_run

runner = CliRunner()
#: The spec's parity bound for ONNX FP32 vs PyTorch on real test windows, cycles.
RUL_TOLERANCE = 0.05
#: Weight matrices of the exported graph (the network's inference form, amnl.model.network):
#: 3 conv blocks, q/k/v/out of the attention, 3 funnel layers, 4 RUL-head and 3 health-head layers.
HEAD_PREFIXES = ("net.rul_head", "net.health_head")
N_MATMUL_WEIGHTS = 3 + 4 + 3 + 4 + 3


@pytest.fixture(autouse=True)
def _isolated_cache(monkeypatch, tmp_path):
    """Engines exported on the fly go to a temporary cache, never the user's."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A tiny model trained 1 epoch on a synthetic fleet: (run dir, data dir)."""
    root = tmp_path_factory.mktemp("onnx")
    write_fleet(root / "data", "FD001", n_train=8, n_test=4, seed=3)
    cfg = RunConfig(DataConfig(subset="FD001", val_fraction=0.25), MODEL_SIZES["tiny"],
                    TrainConfig(epochs=1, batch_size=64, precision="fp32"))
    train_run(cfg, root / "data", root / "run")
    return root / "run", root / "data"


@pytest.fixture(scope="module")
def test_windows(tiny_run):
    run, data = tiny_run
    _cfg, pre, _model = load_run(run)
    return pre.windows(load_subset(data, "FD001", train=False).test).arrays()


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    """The tiny run exported twice by the library: {"fp32": path, "int8": path}."""
    out = tmp_path_factory.mktemp("export")
    return {p: ox.export_run(tiny_run[0], out / ONNX_FILES[p], int8=p == "int8")
            for p in ONNX_PRECISIONS}


def test_fp32_matches_torch_with_dynamic_batch(tiny_run, exported, test_windows):
    _cfg, _pre, model = load_run(tiny_run[0])
    torch_engine, onnx_engine = TorchRuntime(model), OnnxRuntime(exported["fp32"], chunk=7)
    for n in (1, 5, len(test_windows)):  # chunks of 7 cover several session.run calls
        diff = ox.parity(torch_engine, onnx_engine, test_windows[:n])
        assert diff["rul"] < 1e-3 and diff["probabilities"] < 1e-5, (n, diff)
    rul, probs = onnx_engine(test_windows)
    assert rul.dtype == np.float32 and (rul >= 0).all()
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)


def test_int8_quantizes_every_weight_matrix_heads_included(tiny_run, exported, test_windows):
    import onnx

    counts = ox.quantized_node_counts(exported["int8"])
    assert counts["DynamicQuantizeLSTM"] == 2 and counts["float_lstm"] == 0
    assert counts["MatMulInteger"] == N_MATMUL_WEIGHTS and counts["float_gemm"] == 0
    assert counts["float_matmul"] == 2  # attention scores and pooling: activations only
    graph = onnx.load(str(exported["int8"])).graph
    float_weights = {i.name for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    int8_weights = {i.name for i in graph.initializer
                    if i.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)}
    for prefix in HEAD_PREFIXES:  # every head layer's weight is 8-bit, none left in FP32
        assert any(n.startswith(f"{prefix}.0.weight") for n in int8_weights), prefix
        assert not any(n.startswith(prefix) and n.endswith(("weight", "weight_transposed"))
                       for n in float_weights), prefix
    ops = {n.op_type for n in graph.node}
    assert not ops & {"Gemm", "Conv", "LSTM"}, ops  # every dense layer, conv and LSTM in INT8
    _cfg, _pre, model = load_run(tiny_run[0])
    diff = ox.parity(TorchRuntime(model), OnnxRuntime(exported["int8"]), test_windows)
    assert diff["rul"] < 2.0 and diff["probabilities"] < 0.05, diff


def test_metadata_and_preprocessing_make_the_folder_self_contained(tiny_run, exported, test_windows):
    meta = ox.read_metadata(exported["int8"])
    cfg = RunConfig.from_dict(json.loads(meta["amnl.config"]))
    assert meta[ox.META_PRECISION] == "int8" and int(meta[ox.META_WINDOW]) == cfg.data.window
    assert json.loads(meta["amnl.features"])[0] == "s_2"
    folder = exported["int8"].parent
    assert {p.name for p in folder.iterdir()} == {*ox.PREPROCESS_FILES, ONNX_FILES["fp32"],
                                                  ONNX_FILES["int8"], CALIBRATION_FILE, DRIFT_FILE}
    # the exported folder is enough for inference, and does not need torch
    code = ("import sys; from amnl.inference.onnx_runtime import load_exported; "
            f"c, p, e = load_exported({str(folder)!r}, precision='int8'); "
            "import numpy as np; r, _ = e(np.zeros((3, c.data.window, c.data.n_features), np.float32)); "
            "assert r.shape == (3,); assert 'torch' not in sys.modules, 'torch imported'")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr


def test_from_model_caches_and_never_writes_the_model_dir(tiny_run, tmp_path):
    run = tiny_run[0]
    _cfg, _pre, model = load_run(run)
    before = sorted(p.name for p in run.iterdir())
    first = OnnxRuntime.from_model(model, run, 30, cache_dir=tmp_path)
    assert first.path.parent == tmp_path and sorted(p.name for p in run.iterdir()) == before
    mtime = first.path.stat().st_mtime_ns
    assert OnnxRuntime.from_model(model, run, 30, cache_dir=tmp_path).path.stat().st_mtime_ns == mtime
    # an export in the model dir is used when it matches these weights ...
    own = tmp_path / "dir"
    ox.export_onnx(model, own / ONNX_FILES["fp32"], 30)
    assert OnnxRuntime.from_model(model, own, 30, cache_dir=tmp_path).path == own / ONNX_FILES["fp32"]
    # ... and ignored when it comes from other weights
    other = tmp_path / "other"
    ox.export_onnx(create_model("tiny"), other / ONNX_FILES["fp32"], 30)
    assert OnnxRuntime.from_model(model, other, 30, cache_dir=tmp_path).path.parent == tmp_path
    (other / ONNX_FILES["fp32"]).write_bytes(b"not an onnx file")  # a truncated file is no match either
    assert OnnxRuntime.from_model(model, other, 30, cache_dir=tmp_path).path.parent == tmp_path
    with pytest.raises(ValueError, match="bf16"):
        OnnxRuntime.from_model(model, run, 30, precision="bf16", cache_dir=tmp_path)


def test_predictor_onnx_engine_matches_torch(tiny_run, tmp_path):
    run, data = tiny_run
    table = load_subset(data, "FD001", train=False).test
    a = Predictor.load(run).predict_table(table)
    b = Predictor.load(run, InferenceConfig(runtime="onnx", threads=1)).predict_table(table)
    np.testing.assert_array_equal(a.unit, b.unit)
    np.testing.assert_allclose(a.rul, b.rul, atol=1e-3)
    assert a.health == b.health
    assert any((tmp_path / "cache" / "amnl" / "onnx").iterdir())  # the default cache


def test_cli_export_end_to_end(tiny_run, tmp_path):
    run = tiny_run[0]
    out = tmp_path / "export" / "model_int8.onnx"
    res = runner.invoke(app, ["export", "--format", "onnx", "--int8", "--run", str(run),
                              "--out", str(out), "--data-dir", str(tiny_run[1])])
    assert res.exit_code == 0, res.output
    assert out.is_file() and (out.parent / "preprocess.npz").is_file()
    assert '"DynamicQuantizeLSTM": 2' in res.output
    assert "parity vs PyTorch FP32 on" in res.output and "windows of test_FD001.txt" in res.output
    res = runner.invoke(app, ["evaluate", "--dataset", "FD001", "--run", str(run), "--data-dir",
                              str(tiny_run[1]), "--runtime", "onnx", "--precision", "int8", "--json"])
    assert res.exit_code == 0, res.output


def test_cli_export_fails_and_removes_the_file_when_parity_is_off(tiny_run, tmp_path, monkeypatch):
    """An export outside the parity limits is not left behind looking usable."""
    monkeypatch.setitem(ox.PARITY_LIMITS, "int8", {"rul_p99": 1e-9, "rul_max": 1e-9})
    out = tmp_path / "model_int8.onnx"
    res = runner.invoke(app, ["export", "--int8", "--run", str(tiny_run[0]), "--out", str(out),
                              "--data-dir", str(tiny_run[1])])
    assert res.exit_code == 2 and "the int8 export is off from PyTorch FP32" in res.stderr
    assert "p99 |dRUL|" in res.stderr and not out.exists()
    # random windows (no real ones at hand) are printed, not held against the limits
    res = runner.invoke(app, ["export", "--int8", "--run", str(tiny_run[0]), "--out", str(out),
                              "--data-dir", str(tmp_path / "no-data")])
    assert res.exit_code == 0 and "random windows" in res.output and out.exists()


def test_int8_weights_cannot_saturate_without_vnni(exported):
    """Every MatMul's weights are unsigned (U8U8), and the LSTMs' signed weights use 7 bits:
    neither can overflow the int16 pair sums of x86 kernels without VNNI (255 * 2 * 63 < 2^15)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(exported["int8"])).graph
    init = {i.name: i for i in graph.initializer}
    matmuls = [n.input[1] for n in graph.node if n.op_type == "MatMulInteger"]
    assert len(matmuls) == N_MATMUL_WEIGHTS
    assert {init[w].data_type for w in matmuls} == {onnx.TensorProto.UINT8}
    lstms = [n for n in graph.node if n.op_type == "DynamicQuantizeLSTM"]
    assert len(lstms) == 2
    for node in lstms:
        for w in node.input[1:3]:  # input and recurrent weights
            values = numpy_helper.to_array(init[w])
            assert values.dtype == np.int8 and int(np.abs(values.astype(int)).max()) <= 64


@pytest.mark.parametrize("args, message", [
    (["--format", "tflite"], "--format must be one of onnx"),
    (["--out", "model.txt"], "--out must be a folder or a .onnx file"),
    (["--weights", "FD001"], "give at most one of --run, --weights"),
])
def test_cli_export_errors(tiny_run, tmp_path, args, message):
    base = {"--out": str(tmp_path / "m.onnx"), "--run": str(tiny_run[0])}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = value
    res = runner.invoke(app, ["export", *[x for kv in base.items() for x in kv]])
    assert res.exit_code == 2 and message in res.output, res.output


def test_cli_export_refuses_to_mix_models_in_one_folder(tiny_run, tmp_path):
    out = tmp_path / "m.onnx"
    (tmp_path / "config.json").write_text("{}")
    res = runner.invoke(app, ["export", "--run", str(tiny_run[0]), "--out", str(out)])
    assert res.exit_code == 2 and "belongs to another model" in res.output


@pytest.mark.needs_data
def test_fp32_parity_on_real_fd001_test_windows(cmapss_dir, tmp_path):
    """The published base model (bundled weights when present, else a seeded random init)."""
    from amnl.errors import ModelError
    from amnl.features.pipeline import Preprocessor
    from amnl.rundir import bundled_dir

    try:
        _cfg, pre, model = load_run(bundled_dir("FD001"))
    except ModelError:
        torch.manual_seed(0)
        model = create_model("base").eval()
        pre = Preprocessor(DataConfig()).fit(load_subset(cmapss_dir, "FD001", test=False).train)
    subset = load_subset(cmapss_dir, "FD001", train=False)
    windows = pre.windows(subset.test)
    x = windows.arrays()[np.random.default_rng(0).choice(len(windows), 512, replace=False)]
    x = np.concatenate([pre.windows(subset.test, last_only=True).arrays(), x])
    path = ox.export_onnx(model, tmp_path / "model.onnx", 30)
    diff = ox.parity(TorchRuntime(model), OnnxRuntime(path), x)
    assert diff["rul"] <= RUL_TOLERANCE, diff
    assert diff["probabilities"] < 1e-4, diff


def test_missing_extra_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` fail
    with pytest.raises(ImportError, match=r"amnl\[export\]"):
        ox.check_available()


def test_flops_per_window_matches_the_spec_and_torch_counter():
    from torch.utils.flop_counter import FlopCounterMode

    from amnl.profiling.flops import flops_per_window

    model = create_model("base").eval()
    training = flops_per_window(model.config, 30, graph="training")
    inference = flops_per_window(model.config, 30)
    assert training["lstm"] == inference["lstm"] == 2 * 30 * 2 * 4 * 256 * ((64 + 256) + (512 + 256))
    assert inference["attention"] < training["attention"] / 20
    assert training["total"] == 201_873_024 and inference["total"] == 139_703_936
    # torch's counter sees the matrix products of the CNN, the dense layers and the inference
    # form's attention (not the LSTM): the same sum
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 30, 14))
    assert counter.get_total_flops() == sum(inference[k] for k in ("cnn", "attention", "funnel", "heads"))


def test_bench_runtimes_smoke(tmp_path):
    from amnl.profiling.bench import bench_runtimes, format_table

    torch.manual_seed(0)
    threads = torch.get_num_threads()
    rows = bench_runtimes(create_model("tiny"), windows=(8,),
                          specs=(("torch", "fp32"), ("torch-full", "fp32"), ("onnx", "int8")),
                          threads=threads + 1, peaks={"fp32": 1e11, "int8": 4e11},
                          latency_seconds=0.05, throughput_seconds=0.05, onnx_dir=tmp_path,
                          rss_source={"size": "tiny"})
    assert torch.get_num_threads() == threads  # measured with threads + 1, then put back
    assert [(r.runtime, r.precision) for r in rows] == [("torch", "fp32"), ("torch-full", "fp32"),
                                                         ("onnx", "int8")]
    for r in rows:
        assert r.p50_ms > 0 and r.throughput > 0 and 0 < r.fraction_of_peak
    assert rows[0].rss_mb > 10 and rows[2].rss_mb > 10 and rows[1].rss_mb is None
    assert rows[0].rul_max_abs_diff == 0.0 and rows[1].rul_max_abs_diff < 1e-4  # the same function
    assert rows[1].flops_per_window > rows[0].flops_per_window  # full attention costs more
    assert "onnx" in format_table(rows)


def test_time_calls_runs_min_reps_without_time_budget(caplog):
    """A count-only measurement (seconds=0, as chunk_sweep uses) makes every requested call and
    does not warn that the machine is busy."""
    from amnl.profiling.bench import time_calls

    calls = []
    times = time_calls(lambda: calls.append(1), seconds=0.0, min_reps=5, warmup=1)
    assert len(times) == 5 and len(calls) == 6
    assert "looks busy" not in caplog.text


@pytest.mark.needs_data
@pytest.mark.parametrize("name", ["FD001", "FD002", "FD003", "FD004"])
def test_bundled_int8_export_passes_parity_on_real_windows_on_this_host(name, cmapss_dir, tmp_path):
    """`amnl export --int8` of each bundled model, checked on its test file's windows against
    PyTorch FP32 on whatever host runs the tests (the command fails when it is off)."""
    out = tmp_path / "model_int8.onnx"
    res = runner.invoke(app, ["export", "--int8", "--weights", name, "--out", str(out),
                              "--data-dir", str(cmapss_dir)])
    assert res.exit_code == 0, res.output
    assert f"windows of test_{name}.txt" in res.output and out.is_file()


def test_bench_measures_only_what_is_asked_and_checks_out_first(tmp_path):
    """Peaks only for the precisions asked, each within --seconds; a bad --out fails at once."""
    import time

    out = tmp_path / "b.json"
    t0 = time.perf_counter()
    res = runner.invoke(app, ["bench", "--random-init", "--size", "tiny", "--runtimes", "onnx:int8",
                              "--windows", "8", "--seconds", "0.05", "--no-rss", "--threads", "1",
                              "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert sorted(json.loads(out.read_text())["peaks"]) == ["int8"]
    assert "matmul peak, measured now: int8" in res.output and "GOP/s" in res.output
    assert "% peak" in res.output and "MFLOP/win" in res.output
    assert time.perf_counter() - t0 < 60
    res = runner.invoke(app, ["bench", "--random-init", "--size", "tiny", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "is a folder" in res.stderr and "matmul peak" not in res.output
