"""The run directory contract.

A finished run directory holds exactly:

=====================  ===================================================================
``config.json``        the resolved :class:`amnl.config.RunConfig`
``preprocess.npz``     regime centres and per-regime mean/std (plain arrays, no pickle)
``preprocess.json``    feature names and number of regimes
``model.safetensors``  weights of the validation-selected EMA model
``metrics.jsonl``      one JSON line per epoch (losses, validation metrics, LR, seconds)
``metrics.json``       the final summary (best epoch, validation metrics, timings)
=====================  ===================================================================

An interrupted run also holds ``checkpoint.pt`` (resume with ``--resume``); a distilled run
(``train.distill`` > 0) also holds ``teacher_targets.npz``, its copy of the teachers' targets.
Bundled models use the same layout with FP16 weights. :func:`load_run` needs nothing else.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from amnl.config import RunConfig
from amnl.errors import ModelError
from amnl.features.pipeline import Preprocessor
from amnl.model.network import AMNL

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
SUMMARY_FILE = "metrics.json"
RUN_FILES = (CONFIG_FILE, Preprocessor.STATE_FILE, Preprocessor.META_FILE, WEIGHTS_FILE,
             "metrics.jsonl", SUMMARY_FILE)
#: What inference needs (bundled models ship only these).
INFERENCE_FILES = (CONFIG_FILE, Preprocessor.STATE_FILE, Preprocessor.META_FILE, WEIGHTS_FILE)


def save_weights(model: torch.nn.Module, path: str | Path, dtype: torch.dtype | None = None) -> None:
    """Write the state dict as safetensors, optionally cast (e.g. ``torch.float16``)."""
    state = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous()
             for k, v in model.state_dict().items()}
    save_file(state, str(path))


def load_run(run_dir: str | Path, device: str = "cpu") -> tuple[RunConfig, Preprocessor, AMNL]:
    """Rebuild config, preprocessing and the FP32 model from a run directory.

    Raises:
        ModelError: a required file is missing.
    """
    d = Path(run_dir)
    missing = [f for f in INFERENCE_FILES if not (d / f).is_file()]
    if missing:
        raise ModelError(f"{d}: not a complete run directory, missing {', '.join(missing)}")
    cfg = RunConfig.load(d / CONFIG_FILE)
    pre = Preprocessor.load(d, cfg.data)
    model = AMNL(cfg.model)
    state = {k: v.float() if v.is_floating_point() else v
             for k, v in load_file(str(d / WEIGHTS_FILE)).items()}
    model.load_state_dict(state)
    return cfg, pre, model.to(device).eval()
