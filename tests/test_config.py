"""Configuration: flags over a recipe in one function, derived fields, inference settings."""

from __future__ import annotations

import json

import pytest

from amnl.config import (
    MODEL_SIZES,
    RUNTIME_PRECISIONS,
    InferenceConfig,
    RunConfig,
    build_run_config,
)
from amnl.errors import ConfigError


def test_flags_override_the_recipe_and_none_keeps_it(tmp_path):
    recipe = build_run_config(subset="FD001", size="tiny", loss="baseline", seed=3, epochs=7)
    path = tmp_path / "r.json"
    recipe.save(path)
    base = RunConfig.load(path)
    kept = build_run_config(base, subset="FD002", loss=None, seed=None, epochs=None)
    assert (kept.train.loss, kept.train.seed, kept.train.epochs) == ("baseline", 3, 7)
    assert kept.data.subset == "FD002" and kept.model == base.model
    changed = build_run_config(base, subset="FD001", loss="amnl", device="auto")
    assert changed.train.loss == "amnl" and changed.train.device == "auto"
    assert base.train.loss == "baseline"  # the recipe itself is not modified


def test_size_with_a_recipe_is_refused_and_sizes_are_named():
    with pytest.raises(ConfigError, match="--size and --config cannot be combined"):
        build_run_config(RunConfig(), subset="FD001", size="tiny")
    with pytest.raises(ConfigError, match="unknown model size 'huge'"):
        build_run_config(subset="FD001", size="huge")
    assert build_run_config(subset="FD001", size="tiny").model.lstm_hidden == MODEL_SIZES["tiny"].lstm_hidden


def test_teacher_targets_alone_distil_at_one_half():
    cfg = build_run_config(subset="FD001", size="tiny", teacher_targets="t.npz")
    assert cfg.train.distill == 0.5
    assert build_run_config(subset="FD001", size="tiny", teacher_targets="t.npz",
                            distill=1.0).train.distill == 1.0


def test_derived_fields_follow_the_data_settings():
    cfg = RunConfig.from_dict({"data": {"rul_cap": 130.0, "cycle_feature": True}})
    assert cfg.model.in_features == 15 and cfg.model.rul_scale == 130.0


def test_bad_config_files_name_the_file_and_field(tmp_path):
    path = tmp_path / "c.json"
    path.write_text('{"train": {"loss": "l2"}}')
    with pytest.raises(ConfigError, match=r"c.json: train.loss must be one of amnl, .*got 'l2'"):
        RunConfig.load(path)
    path.write_text('{"train": {"loss": ')
    with pytest.raises(ConfigError, match=r"c.json:1:col \d+: not valid JSON"):
        RunConfig.load(path)
    path.write_text(json.dumps({"model": {"lstm_size": 3}}))
    with pytest.raises(ConfigError, match="unknown ModelConfig fields: \\['lstm_size'\\]"):
        RunConfig.load(path)
    with pytest.raises(ConfigError, match="no such config file"):
        RunConfig.load(tmp_path / "none.json")


def test_inference_config_checks_each_runtime_and_precision():
    for runtime, precisions in RUNTIME_PRECISIONS.items():
        for precision in precisions:
            if precision != "fp16":
                assert InferenceConfig(runtime=runtime, precision=precision).runtime == runtime
    assert InferenceConfig(batch_size=0).batch_size == "auto"
    for bad, message in (({"runtime": "tflite"}, "runtime must be one of torch, onnx"),
                         ({"runtime": "onnx", "device": "cuda"}, "onnx runtime runs on the CPU"),
                         ({"precision": "int8", "device": "cuda"}, "int8 runs on the CPU"),
                         ({"batch_size": -1}, "batch_size must be >= 1"),
                         ({"memory_budget_mb": 0}, "memory_budget_mb must be > 0")):
        with pytest.raises(ConfigError, match=message):
            InferenceConfig(**bad)
