"""Predictor.load(source, InferenceConfig): sources, model ids, threads, exports without torch."""

from __future__ import annotations

import logging
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from amnl import InferenceConfig, ModelError, Predictor
from amnl.config import DataConfig, RunConfig, TrainConfig
from amnl.data.cmapss import EngineTable, read_table
from amnl.data.synthetic import write_fleet
from amnl.errors import ConfigError
from amnl.model.factory import MODEL_SIZES
from amnl.rundir import model_id
from amnl.train.run import train_run


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A tiny model trained 1 epoch on a synthetic fleet: (run dir, test table)."""
    root = tmp_path_factory.mktemp("predictor")
    write_fleet(root / "data", "FD001", n_train=8, n_test=12, seed=5)
    cfg = RunConfig(DataConfig(subset="FD001", val_fraction=0.25), MODEL_SIZES["tiny"],
                    TrainConfig(epochs=1, batch_size=64, precision="fp32"))
    train_run(cfg, root / "data", root / "run")
    return root / "run", read_table(root / "data" / "test_FD001.txt")


def _units(table: EngineTable, units) -> EngineTable:
    return EngineTable(table.path, table.values[np.isin(table.unit, units)])


def test_model_id_is_a_content_hash(tiny_run, tmp_path):
    run, _ = tiny_run
    p = Predictor.load(run)
    assert p.model_id == model_id(run) and len(p.model_id) == 16
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in run.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    assert model_id(copy) == p.model_id  # same files, same id, wherever they lie
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    assert model_id(copy) != p.model_id
    assert Predictor.load("FD001").model_id == model_id(Predictor.load(None).source)


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_one_predictor_from_eight_threads_gives_the_single_thread_results(tiny_run, runtime):
    """One Predictor (automatic batch size, measured at load) called from 8 threads at once,
    each on its own units, equals the same calls made one after another."""
    if runtime == "onnx":
        pytest.importorskip("onnxruntime")
    run, table = tiny_run
    p = Predictor.load(run, InferenceConfig(runtime=runtime, memory_budget_mb=1.0, threads=1))
    groups = [[u] for u in table.units[:8]]
    serial = [p.predict_table(_units(table, g)).rul for g in groups]
    with ThreadPoolExecutor(8) as pool:
        for _ in range(3):
            parallel = list(pool.map(lambda g: p.predict_table(_units(table, g)).rul, groups))
            for a, b in zip(serial, parallel):
                np.testing.assert_array_equal(a, b)


def test_load_sets_no_process_wide_state(tiny_run):
    import torch

    before = torch.get_num_threads()
    Predictor.load(tiny_run[0], InferenceConfig(threads=before + 1))
    assert torch.get_num_threads() == before


def test_sources_and_their_errors(tiny_run, tmp_path):
    with pytest.raises(ModelError, match="no such model"):
        Predictor.load(tmp_path / "nowhere")
    with pytest.raises(ModelError, match="not a complete run directory, missing config.json"):
        Predictor.load(tmp_path)
    with pytest.raises(ConfigError, match="precision must be one of fp32, int8 with the onnx"):
        InferenceConfig(runtime="onnx", precision="bf16")
    with pytest.raises(ConfigError, match="fp16 inference needs CUDA"):
        InferenceConfig(precision="fp16")


def test_onnx_from_a_run_dir_says_where_it_writes(tiny_run, tmp_path, caplog):
    """A run directory asked for the onnx runtime is exported into the user cache once, and
    the path is logged: nothing is written there silently."""
    pytest.importorskip("onnxruntime")
    with caplog.at_level(logging.WARNING, logger="amnl.inference.onnx_runtime"):
        p = Predictor.load(tiny_run[0], InferenceConfig(runtime="onnx", cache_dir=str(tmp_path)))
    written = list(tmp_path.iterdir())
    assert len(written) == 1 and str(written[0]) in caplog.text
    assert p.runtime.path == written[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="amnl.inference.onnx_runtime"):
        Predictor.load(tiny_run[0], InferenceConfig(runtime="onnx", cache_dir=str(tmp_path)))
    assert "exported" not in caplog.text  # reused


def test_an_exported_folder_predicts_without_torch(tiny_run, tmp_path):
    pytest.importorskip("onnxruntime")
    from amnl.export.onnx import export_run

    run, _ = tiny_run
    export_run(run, tmp_path / "model_int8.onnx", int8=True)
    with pytest.raises(ModelError, match="--runtime onnx"):
        Predictor.load(tmp_path)
    code = ("import sys; from amnl import Predictor, InferenceConfig; "
            "from amnl.data.cmapss import read_table; "
            f"p = Predictor.load({str(tmp_path)!r}, InferenceConfig(runtime='onnx', precision='int8')); "
            f"r = p.predict_table(read_table({str(tiny_run[1].path)!r})); "
            "print(p.model_id); assert len(r.rul) == 12; assert 'torch' not in sys.modules")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == model_id(run)  # the export carries its source's id
