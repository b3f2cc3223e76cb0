"""The run-directory contract: every file name, saving and loading, and the model's id.

A finished run directory (``amnl train --out DIR``) holds exactly:

=====================  ===================================================================
``config.json``        the resolved :class:`amnl.config.RunConfig`
``preprocess.npz``     regime centres and per-regime mean/std (plain arrays, no pickle)
``preprocess.json``    feature names and number of regimes
``model.safetensors``  weights of the validation-selected EMA model
``metrics.jsonl``      one JSON line per epoch (losses, validation metrics, LR, seconds)
``metrics.json``       the final summary (best epoch, validation metrics, timings)
``calibration.json``   the RUL intervals' offsets (:mod:`amnl.inference.intervals`)
``drift.json``         the training inputs' distribution (:mod:`amnl.inference.drift`)
=====================  ===================================================================

The last two are written by ``amnl calibrate`` (and at the end of training) from held-out
engines; bundled models and exported folders carry them too.

An interrupted run also holds ``checkpoint.pt`` (resume with ``--resume``); a distilled run
(``train.distill`` > 0) also holds ``teacher_targets.npz``, its copy of the teachers' targets.
Bundled models use the same layout with FP16 weights and only :data:`INFERENCE_FILES`. An
exported folder (``amnl export``) holds ``model.onnx`` and/or ``model_int8.onnx`` beside
:data:`PREPROCESS_FILES`. :func:`load_run` needs nothing else.

This module imports numpy and the preprocessing at load time, never torch: torch and
safetensors are imported inside the functions that read or write weights, so the ONNX-only
side uses this contract without torch.
"""

from __future__ import annotations

import hashlib
import os
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from amnl.errors import ModelError
from amnl.features.pipeline import Preprocessor

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from amnl.config import RunConfig
    from amnl.model.network import AMNL

CONFIG_FILE = "config.json"
PREPROCESS_STATE_FILE = Preprocessor.STATE_FILE  # preprocess.npz
PREPROCESS_META_FILE = Preprocessor.META_FILE  # preprocess.json
WEIGHTS_FILE = "model.safetensors"
METRICS_LOG = "metrics.jsonl"
SUMMARY_FILE = "metrics.json"
#: Resumable state of an unfinished run (deleted when training completes).
CHECKPOINT_FILE = "checkpoint.pt"
#: A distilled run's copy of its teachers' targets.
TARGETS_FILE = "teacher_targets.npz"
#: ONNX files of an exported folder (or of a run directory exported in place), by precision.
ONNX_FILES = {"fp32": "model.onnx", "int8": "model_int8.onnx"}

#: Files that carry the preprocessing; copied beside an exported model.
PREPROCESS_FILES = (CONFIG_FILE, PREPROCESS_STATE_FILE, PREPROCESS_META_FILE)
#: What inference with torch needs (bundled models ship only these).
INFERENCE_FILES = (*PREPROCESS_FILES, WEIGHTS_FILE)
#: The RUL interval calibration and the drift reference (optional for inference).
CALIBRATION_FILE = "calibration.json"
DRIFT_FILE = "drift.json"
#: Every file of a finished run.
RUN_FILES = (*INFERENCE_FILES, METRICS_LOG, SUMMARY_FILE, CALIBRATION_FILE, DRIFT_FILE)

#: Where bundled models live inside the package (one run directory per subset, FP16 weights).
BUNDLED_PACKAGE = "amnl.weights"
#: Length of a model id (hex digits of a SHA-256).
MODEL_ID_LENGTH = 16
#: What a model source may be, for messages.
SOURCE_HELP = ("a bundled model name (FD001..FD004), a run directory (`amnl train --out`), an "
               "exported folder or .onnx file (`amnl export --out`)")


# -- where a model is -------------------------------------------------------------------------

def bundled_dir(name: str) -> Path:
    """Folder of the bundled model for subset ``name`` (FD001..FD004).

    Raises:
        DataError: not a subset name. ModelError: this installation has no such model.
    """
    from amnl.data.cmapss import check_subset_name

    name = check_subset_name(name)
    path = Path(str(resources.files(BUNDLED_PACKAGE))) / name
    if not path.is_dir():
        raise ModelError(f"no bundled model {name!r} in this installation; train one with "
                         f"`amnl train --dataset {name}` and pass --run DIR")
    return path


def resolve_source(source: str | os.PathLike | None) -> Path:
    """The folder or ``.onnx`` file a model source names: an existing path (a run directory,
    an exported folder or file), else a bundled model name; None is the bundled FD001.

    Raises:
        ModelError: neither an existing path nor a bundled model.
    """
    if source is None:
        return bundled_dir("FD001")
    path = Path(source)
    if path.exists():
        return path
    from amnl.data.cmapss import SUBSETS

    if str(source).upper() in SUBSETS or str(source).isdigit():
        return bundled_dir(str(source))
    raise ModelError(f"{source}: no such model; give {SOURCE_HELP}")


def has_weights(directory: str | os.PathLike) -> bool:
    """True for a run directory or bundled model (torch weights), False for an export."""
    return (Path(directory) / WEIGHTS_FILE).is_file()


def check_files(directory: str | os.PathLike, names: tuple[str, ...], what: str) -> None:
    """Raise :class:`ModelError` naming every file of ``names`` missing from ``directory``."""
    d = Path(directory)
    missing = [n for n in names if not (d / n).is_file()]
    if missing:
        raise ModelError(f"{d}: not {what}, missing {', '.join(missing)}")


# -- identity ---------------------------------------------------------------------------------

def model_id(directory: str | os.PathLike) -> str:
    """Content hash naming a model: SHA-256 over its config, preprocessing and weights.

    The same files give the same id wherever they lie (a copy, another machine); any change to
    the weights or the preprocessing gives another. An exported folder without torch weights
    carries the id of the run it came from in its ONNX metadata
    (:func:`amnl.export.onnx.export_run`); this function reads the inference files only.

    Returns:
        :data:`MODEL_ID_LENGTH` hex digits.

    Raises:
        ModelError: an inference file is missing.
    """
    d = Path(directory)
    check_files(d, INFERENCE_FILES, "a complete run directory")
    return content_id([d / name for name in INFERENCE_FILES])


def content_id(paths: list[Path]) -> str:
    """SHA-256 over each file's name and bytes, in order: :data:`MODEL_ID_LENGTH` hex digits."""
    h = hashlib.sha256()
    for path in paths:
        h.update(path.name.encode() + b"\0")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:MODEL_ID_LENGTH]


# -- reading and writing ----------------------------------------------------------------------

def load_config(directory: str | os.PathLike) -> RunConfig:
    """The :class:`~amnl.config.RunConfig` of a run directory or exported folder."""
    from amnl.config import RunConfig

    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise ModelError(f"{Path(directory)}: not a run directory, missing {CONFIG_FILE}")
    return RunConfig.load(path)


def load_preprocessor(directory: str | os.PathLike, config: RunConfig) -> Preprocessor:
    """The fitted preprocessing saved in ``directory`` (numpy only, no torch)."""
    check_files(directory, PREPROCESS_FILES, "a model folder")
    return Preprocessor.load(directory, config.data)


def write_atomic(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` through a temporary file beside it and a rename, so that a
    crash never leaves half a file (mode from the umask)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    if isinstance(data, str):
        tmp.write_text(data)
    else:
        tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


def save_weights(model: torch.nn.Module, path: str | Path, dtype: torch.dtype | None = None) -> None:
    """Write the state dict as safetensors, optionally cast (e.g. ``torch.float16``).

    Written like the run's other files (mode from the umask, 0644 by default, where
    ``safetensors.save_file`` would give 0600), through a temporary file and a rename, so that a
    crash never leaves half a weights file.
    """
    from safetensors.torch import save

    state = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous()
             for k, v in model.state_dict().items()}
    write_atomic(path, save(state))


def load_run(run_dir: str | Path, device: str = "cpu") -> tuple[RunConfig, Preprocessor, AMNL]:
    """Rebuild config, preprocessing and the FP32 model from a run directory.

    Raises:
        ModelError: a required file is missing.
    """
    import torch
    from safetensors.torch import load_file

    from amnl.model.network import AMNL

    d = Path(run_dir)
    check_files(d, INFERENCE_FILES, "a complete run directory")
    cfg = load_config(d)
    pre = load_preprocessor(d, cfg)
    with torch.device("meta"):  # no random initialisation to overwrite: 2 x 14 MB less RSS
        model = AMNL(cfg.model)
    try:
        loaded = load_file(str(d / WEIGHTS_FILE))
    except Exception as exc:  # safetensors' own error type: truncated, empty or foreign file
        raise ModelError(f"{d / WEIGHTS_FILE}: not a readable safetensors file ({exc}); copy the "
                         "run directory again or retrain") from None
    state = {k: v.float() if v.is_floating_point() else v for k, v in loaded.items()}
    try:
        model.load_state_dict(state, assign=True)  # strict: every parameter and buffer is loaded
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[1:2] or [str(exc)[:200]]
        raise ModelError(f"{d / CONFIG_FILE} does not match the weights in {WEIGHTS_FILE} "
                         f"({first[0].strip()}); the two files come from different runs") from None
    return cfg, pre, model.to(device).eval()
