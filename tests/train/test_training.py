"""End to end on a synthetic fleet: train 2 epochs, the run directory, resume, no test reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from amnl.config import DataConfig, RunConfig, TrainConfig
from amnl.data import cmapss
from amnl.data.synthetic import write_fleet
from amnl.model.factory import MODEL_SIZES
from amnl.rundir import RUN_FILES, load_run
from amnl.train.run import train_run


def _config(**train) -> RunConfig:
    train = {"batch_size": 32, "lr": 3e-3, "warmup_epochs": 0.5, "precision": "fp32", **train}
    return RunConfig(DataConfig(subset="FD001", val_fraction=0.2), MODEL_SIZES["tiny"],
                     TrainConfig(**train))


@pytest.fixture
def fleet(tmp_path):
    paths = write_fleet(tmp_path / "data", "FD001", n_train=10, n_test=4, seed=1)
    return paths["train"].parent


def test_two_epochs_loss_falls_and_run_dir_complete(fleet, tmp_path, monkeypatch):
    opened = []
    real = cmapss.read_table
    monkeypatch.setattr(cmapss, "read_table", lambda p, **kw: opened.append(Path(p).name) or real(p, **kw))
    # The test files must never be read while training: remove them to be sure.
    for f in ("test_FD001.txt", "RUL_FD001.txt"):
        (fleet / f).unlink()
    run = tmp_path / "run"
    summary = train_run(_config(epochs=2), fleet, run)
    assert all("test_" not in p for p in opened) and any("train_" in p for p in opened)
    assert sorted(p.name for p in run.iterdir()) == sorted(RUN_FILES)
    modes = {p.name: p.stat().st_mode & 0o777 for p in run.iterdir()}
    assert len(set(modes.values())) == 1, modes  # the weights as readable as the other files
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(epochs) == 2 and epochs[1]["loss"] < epochs[0]["loss"]
    assert summary["best_epoch"] in (1, 2) and summary["val_rmse"] > 0
    cfg, pre, model = load_run(run)
    assert cfg.train.epochs == 2 and pre.feature_names[0] == "s_2"


def _ctrl_c_in_second_validation(monkeypatch):
    """Make the second validation raise KeyboardInterrupt; returns a function that undoes it."""
    import amnl.train.run as run_mod

    calls = {"n": 0}
    real = run_mod.score_windows

    def flaky(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # Ctrl-C during epoch 2's validation
        return real(*a, **kw)

    monkeypatch.setattr(run_mod, "score_windows", flaky)
    return lambda: monkeypatch.setattr(run_mod, "score_windows", real)


def test_interrupt_then_resume(fleet, tmp_path, monkeypatch):
    run = tmp_path / "run"
    restore = _ctrl_c_in_second_validation(monkeypatch)
    summary = train_run(_config(epochs=3), fleet, run)
    assert summary["interrupted"] and (run / "checkpoint.pt").is_file()
    restore()
    summary = train_run(_config(epochs=3), fleet, run, resume=True)
    assert not summary["interrupted"] and summary["epochs_run"] == 3
    assert not (run / "checkpoint.pt").exists()
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3


def test_balanced_sampling_and_selection_metric(fleet, tmp_path):
    run = tmp_path / "run"
    summary = train_run(_config(epochs=3, balance="health", select_metric="rmse_balanced",
                                early_stop_patience=10), fleet, run)
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    best = min(epochs, key=lambda e: e["val_rmse_balanced"])
    assert summary["best_epoch"] == best["epoch"]
    assert summary["val_rmse_balanced"] == best["val_rmse_balanced"]
    with pytest.raises(ValueError, match="balance"):
        TrainConfig(balance="rul")
    with pytest.raises(ValueError, match="select_metric"):
        TrainConfig(select_metric="mae")


def test_fp16_is_refused_on_the_cpu_and_auto_says_why(fleet, tmp_path):
    """fp16 training needs CUDA (as inference does); auto picks bf16 only where it is native."""
    from amnl.errors import ConfigError
    from amnl.machine import native_bf16
    from amnl.train.run import choose_precision

    with pytest.raises(ConfigError, match="fp16 needs CUDA"):
        train_run(_config(epochs=1, precision="fp16", device="cpu"), fleet, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    native, _ = native_bf16("cpu")
    chosen, why = choose_precision("auto", "cpu")
    assert chosen == ("bf16" if native else "fp32") and why.startswith(f"auto: {chosen}")
    summary = train_run(_config(epochs=1, precision="auto"), fleet, tmp_path / "auto")
    assert summary["precision"] == chosen
    assert RunConfig.load(tmp_path / "auto" / "config.json").train.precision == chosen


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="fp16 training needs CUDA")
def test_fp16_uses_loss_scaling_and_resumes_it(fleet, tmp_path, monkeypatch):
    import torch

    scaled = []
    real_scale = torch.amp.GradScaler.scale
    monkeypatch.setattr(torch.amp.GradScaler, "scale",
                        lambda self, loss: scaled.append(self.is_enabled()) or real_scale(self, loss))
    run = tmp_path / "run"
    restore = _ctrl_c_in_second_validation(monkeypatch)
    summary = train_run(_config(epochs=2, precision="fp16", device="cuda"), fleet, run)
    assert summary["interrupted"] and scaled and all(scaled)
    saved = torch.load(run / "checkpoint.pt", weights_only=True)
    assert saved["scaler"]["scale"] > 0  # the loss scale travels with the checkpoint
    restore()
    summary = train_run(_config(epochs=2, precision="fp16", device="cuda"), fleet, run, resume=True)
    assert summary["epochs_run"] == 2 and summary["val_rmse"] < 1e3


def test_history_inputs_train_and_serve_through_onnx(fleet, tmp_path):
    """The `hist` inputs (age + slow smoothing, 29 per cycle) train, reload, and predict the
    same through torch and ONNX Runtime; the age is read from the cycle numbers."""
    pytest.importorskip("onnxruntime")
    import numpy as np

    from amnl.config import InferenceConfig
    from amnl.data.cmapss import EngineTable, read_table
    from amnl.inference.predictor import Predictor

    cfg = _config(epochs=1)
    cfg.data.slow_smoothing, cfg.data.cycle_feature = 0.02, True
    cfg = RunConfig.from_dict(cfg.to_dict())  # in_features follows the data settings
    assert cfg.model.in_features == 29
    run = tmp_path / "run"
    train_run(cfg, fleet, run)
    table = read_table(fleet / "test_FD001.txt")
    torch_pred = Predictor.load(run).predict_table(table)
    onnx_pred = Predictor.load(run, InferenceConfig(runtime="onnx")).predict_table(table)
    assert np.isfinite(torch_pred.rul).all()
    np.testing.assert_allclose(onnx_pred.rul, torch_pred.rul, atol=0.05)
    # The same sensor history, 100 cycles older: only the age input differs.
    older = table.values.copy()
    older[:, 1] += 100
    aged = Predictor.load(run).predict_table(EngineTable(table.path, older))
    assert not np.allclose(aged.rul, torch_pred.rul)


def test_extra_train_pools_engines_and_keeps_validation(fleet, tmp_path, monkeypatch):
    """data.extra_train adds the other file's training engines (its own validation engines left
    out); validation stays on the main subset's engines; no test file is read."""
    import numpy as np

    from amnl.data.cmapss import POOL_UNIT_OFFSET, EngineTable, pool_engines, read_table
    from amnl.features.pipeline import Preprocessor

    write_fleet(fleet, "FD003", n_train=20, n_test=4, seed=2)
    opened = []
    real = cmapss.read_table
    monkeypatch.setattr(cmapss, "read_table", lambda p, **kw: opened.append(Path(p).name) or real(p, **kw))
    cfg = _config(epochs=1)
    cfg.data.extra_train = ("FD003",)
    plain = train_run(_config(epochs=1), fleet, tmp_path / "plain")
    pooled = train_run(cfg, fleet, tmp_path / "pooled")
    assert sorted(set(opened)) == ["train_FD001.txt", "train_FD003.txt"]
    assert pooled["val_units"] == plain["val_units"] and pooled["val_windows"] == plain["val_windows"]
    extra = read_table(fleet / "train_FD003.txt")
    extra_train, extra_val = Preprocessor(cfg.data).split_units(extra)
    assert pooled["train_engines"] == plain["train_engines"] + len(extra_train) == 8 + 16
    assert pooled["extra_train"] == ["FD003"]
    assert RunConfig.load(tmp_path / "pooled" / "config.json").data.extra_train == ("FD003",)

    table, ids = pool_engines([(read_table(fleet / "train_FD001.txt"), np.array([1, 2])),
                               (extra, extra_val)])
    assert isinstance(table, EngineTable)
    np.testing.assert_array_equal(table.units, np.r_[[1, 2], extra_val + POOL_UNIT_OFFSET])
    np.testing.assert_array_equal(np.concatenate(ids), table.units)
    with pytest.raises(ValueError, match="extra_train"):
        DataConfig(subset="FD001", extra_train=("fd001",))


def test_where_bf16_is_emulated_auto_picks_fp32_and_bf16_warns(monkeypatch, caplog):
    """An AVX2-only CPU (no avx512_bf16, no amx_bf16): auto trains in fp32, and a recipe's bf16
    is kept but warned about (a step took 60 s there against 1.6 s in fp32)."""
    import logging

    from amnl import machine
    from amnl.train import run as run_mod

    monkeypatch.setattr(machine, "_cpuinfo_field", lambda name: "fpu avx avx2 fma" if name == "flags"
                        else "AMD EPYC 7B13 64-Core Processor")
    monkeypatch.setattr(run_mod, "native_bf16", machine.native_bf16)
    chosen, why = run_mod.choose_precision("auto", "cpu")
    assert chosen == "fp32" and "would be emulated" in why and "AMD EPYC 7B13" in why
    with caplog.at_level(logging.WARNING, logger="amnl.train.run"):
        assert run_mod.choose_precision("bf16", "cpu")[0] == "bf16"
    assert "bf16 is emulated here" in caplog.text
