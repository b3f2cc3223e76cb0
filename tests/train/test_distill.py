"""Distillation: teacher targets from real runs on a synthetic fleet, mixed into the student's
RUL targets, with the validation split guarded."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from typer.testing import CliRunner

import amnl.train.run as run_mod
from amnl.cli.app import app
from amnl.config import DataConfig, RunConfig, TrainConfig
from amnl.data.synthetic import write_fleet
from amnl.model.factory import MODEL_SIZES
from amnl.train.distill import (
    TARGETS_FILE,
    TeacherTargets,
    compute_teacher_targets,
    distilled_rul,
)
from amnl.train.run import train_run


def _config(split_seed: int = 0, **train) -> RunConfig:
    train = {"batch_size": 32, "lr": 3e-3, "warmup_epochs": 0.5, "precision": "fp32", "epochs": 1,
             **train}
    return RunConfig(DataConfig(subset="FD001", val_fraction=0.2, split_seed=split_seed),
                     MODEL_SIZES["tiny"], TrainConfig(**train))


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    """A synthetic fleet and two one-epoch teacher runs (seeds 0 and 1) on it."""
    root = tmp_path_factory.mktemp("distill")
    data = write_fleet(root / "data", "FD001", n_train=10, n_test=4, seed=1)["train"].parent
    runs = [root / f"teacher-s{s}" for s in (0, 1)]
    for s, run in enumerate(runs):
        train_run(_config(seed=s), data, run)
    return data, runs


def test_targets_average_the_teachers_and_round_trip(teachers, tmp_path):
    data, runs = teachers
    both = compute_teacher_targets(runs, data)
    singles = [compute_teacher_targets([r], data) for r in runs]
    assert len(both.rul) == len(both.unit) == len(both.cycle) > 0
    np.testing.assert_allclose(both.rul, (singles[0].rul + singles[1].rul) / 2, rtol=1e-5, atol=1e-4)
    assert both.spread.max() > 0 and both.teachers == tuple(str(r) for r in runs)
    both.save(tmp_path / "t.npz")
    back = TeacherTargets.load(tmp_path / "t.npz")
    np.testing.assert_array_equal(back.rul, both.rul)
    assert back.subset == "FD001" and back.teachers == both.teachers
    np.testing.assert_array_equal(back.lookup(both.unit[::-1], both.cycle[::-1]), both.rul[::-1])
    with pytest.raises(ValueError, match="no teacher prediction for unit"):
        back.lookup(np.array([both.unit[0]]), np.array([10_000]))


def test_student_trains_on_the_mixed_targets(teachers, tmp_path, monkeypatch):
    data, runs = teachers
    targets = compute_teacher_targets(runs, data)
    targets.save(tmp_path / "t.npz")
    seen = {}
    real = run_mod.WindowBatches

    def spy(windows, *a, **kw):
        seen["windows"] = windows
        return real(windows, *a, **kw)

    monkeypatch.setattr(run_mod, "WindowBatches", spy)
    student = tmp_path / "student"
    summary = train_run(_config(distill=0.5, teacher_targets=str(tmp_path / "t.npz")), data, student)
    w = seen["windows"]
    label = np.minimum(_labels(w), 125.0)
    want = 0.5 * label + 0.5 * np.clip(targets.lookup(w.unit, w.cycle), 0, 125.0)
    np.testing.assert_allclose(w.rul, want, rtol=1e-5, atol=1e-4)
    assert not np.allclose(w.rul, label)  # the teachers did move the targets
    assert (student / TARGETS_FILE).is_file()
    assert summary["distill"] == 0.5 and summary["teachers"] == [str(r) for r in runs]
    saved = json.loads((student / "config.json").read_text())["train"]
    assert saved["distill"] == 0.5 and saved["teacher_targets"].endswith("t.npz")


def _labels(w) -> np.ndarray:
    """The true capped RUL of training windows: engines run to failure at their last cycle."""
    last = {u: w.cycle[w.unit == u].max() for u in np.unique(w.unit)}
    return np.array([last[u] - c for u, c in zip(w.unit, w.cycle)], np.float32)


def test_teachers_with_other_validation_engines_are_refused(teachers, tmp_path):
    data, runs = teachers
    compute_teacher_targets(runs, data).save(tmp_path / "t.npz")
    cfg = _config(split_seed=3, distill=0.5, teacher_targets=str(tmp_path / "t.npz"))
    with pytest.raises(ValueError, match="other validation engines"):
        train_run(cfg, data, tmp_path / "student")


def test_distilled_rul_and_config_checks():
    np.testing.assert_allclose(distilled_rul(np.array([10.0, 125.0]), np.array([-5.0, 200.0]), 1.0, 125.0),
                               [0.0, 125.0])
    with pytest.raises(ValueError, match="needs train.teacher_targets"):
        TrainConfig(distill=0.5)
    with pytest.raises(ValueError, match=r"distill must be in \[0, 1\]"):
        replace(TrainConfig(), distill=1.5, teacher_targets="x.npz")


def test_cli_writes_targets_and_names_bad_runs(teachers, tmp_path):
    data, runs = teachers
    out = tmp_path / "targets.npz"
    res = CliRunner().invoke(app, ["distill-targets", "--run", str(runs[0]), "--run", str(runs[1]),
                                   "--out", str(out), "--data-dir", str(data)])
    assert res.exit_code == 0, res.output
    assert "2 teachers" in res.output and TeacherTargets.load(out).subset == "FD001"
    res = CliRunner().invoke(app, ["distill-targets", "--run", str(tmp_path), "--out", str(out),
                                   "--data-dir", str(data)])
    assert res.exit_code == 2 and "not a complete run directory" in res.output
    student = tmp_path / "student"
    res = CliRunner().invoke(app, ["train", "--data-dir", str(data), "--size", "tiny", "--epochs", "1",
                                   "--teacher-targets", str(out), "--out", str(student), "--no-progress"])
    assert res.exit_code == 0, res.output
    saved = json.loads((student / "config.json").read_text())["train"]
    assert saved["distill"] == 0.5 and saved["teacher_targets"] == str(out)  # the CLI's default weight
    res = CliRunner().invoke(app, ["train", "--data-dir", str(data), "--size", "tiny",
                                   "--teacher-targets", str(tmp_path / "missing.npz"),
                                   "--out", str(tmp_path / "s"), "--no-progress"])
    assert res.exit_code == 2 and "missing.npz" in res.output
