"""Typed configuration: one dataclass per stage, nested in :class:`RunConfig`.

Defaults are the spec's (``../shared/spec/AMNL.md``); every spec *decision* is a field here.
Imports nothing heavier than the standard library.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from amnl.errors import ConfigError

#: The megabyte of every memory figure amnl prints or writes: 10^6 bytes (SI), as the study's
#: "14 MB + 1.8 MB x batch" and "500 MB" are read.
MB = 1_000_000

#: Piecewise-linear RUL cap, cycles (spec section 1: early-life degradation is invisible in the
#: sensors). The one place of this fact: ``DataConfig.rul_cap`` defaults to it, and the model's
#: output scale and the loss's failure weight follow ``data.rul_cap`` (see :class:`RunConfig`).
RUL_CAP = 125.0
#: Decision: healthy > 80, degrading (30, 80], critical <= 30 (capped RUL).
HEALTH_THRESHOLDS = (80.0, 30.0)

#: Dual losses by name (built by :func:`amnl.train.losses.create_loss`).
LOSSES = ("amnl", "amnl-normalized", "baseline", "gaba", "grace")
#: Training autocast precisions; ``auto`` picks bf16 where the device runs it natively, else
#: fp32 (:func:`amnl.train.run.choose_precision`).
TRAIN_PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: Inference runtimes and the precisions each runs.
RUNTIMES = ("torch", "onnx")
RUNTIME_PRECISIONS: dict[str, tuple[str, ...]] = {"torch": ("fp32", "bf16", "fp16", "int8"),
                                                  "onnx": ("fp32", "int8")}
#: Every inference precision, in table order.
INFERENCE_PRECISIONS = ("fp32", "bf16", "fp16", "int8")
DEVICES = ("cpu", "cuda", "auto")
#: Per-epoch sampling of training windows.
BALANCES = ("none", "health")
#: Validation metric for early stopping, the LR plateau and the best checkpoint.
SELECT_METRICS = ("rmse", "rmse_balanced")


def _one_of(name: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(map(str, allowed))}; got {value!r}")


def _check_device(name: str, value: str) -> None:
    if not (value in ("cpu", "auto") or value.split(":")[0] == "cuda"):
        raise ConfigError(f"{name} must be cpu, cuda[:i] or auto; got {value!r}")


def model_size(name: str) -> ModelConfig:
    """A copy of the named model size (:data:`MODEL_SIZES`).

    Raises:
        ConfigError: no such size.
    """
    if name not in MODEL_SIZES:
        raise ConfigError(f"unknown model size {name!r}; choose one of {sorted(MODEL_SIZES)}")
    return replace(MODEL_SIZES[name])


@dataclass
class DataConfig:
    """How C-MAPSS rows become model inputs and labels."""

    subset: str = "FD001"
    """Sub-dataset, FD001..FD004."""
    window: int = 30
    """Window length in cycles; the label is taken at the window's last cycle."""
    use_settings: bool = False
    """Decision: 14 sensors by default; True adds the 3 settings (17 inputs)."""
    n_clusters: int = 6
    """k-means clusters on the settings for operating conditions (merged when they coincide)."""
    rul_cap: float = RUL_CAP
    """Piecewise-linear RUL cap, cycles; the model's output scale and the loss's failure
    weight follow it."""
    health_thresholds: tuple[float, float] = HEALTH_THRESHOLDS
    """Decision: healthy > first, degrading in (second, first], critical <= second (capped RUL)."""
    val_fraction: float = 0.15
    """Decision: fraction of training engines (whole engines) held out for validation."""
    split_seed: int = 0
    """Seed of the engine-level validation split."""
    smoothing: float = 1.0
    """Causal exponential smoothing of the scaled sensors along each engine's history,
    ``s_t = a * x_t + (1 - a) * s_{t-1}`` with ``a`` this factor; 1.0 turns it off. Inputs
    must then be whole histories from the engine's first cycle, as C-MAPSS files are."""
    slow_smoothing: float = 1.0
    """If < 1, add a second, slower causal exponential smoothing of the scaled sensors (this
    factor, e.g. 0.02: a memory of about 50 cycles, longer than the window) as extra inputs,
    which doubles them; 1.0 turns it off. Inputs must then be whole histories from the engine's
    first cycle."""
    baseline_cycles: int = 0
    """If > 0, add each feature's deviation from the mean of the engine's first this-many
    cycles (after scaling and smoothing) as extra inputs, which doubles them; 0 turns it off.
    Inputs must then be whole histories from the engine's first cycle."""
    cycle_feature: bool = False
    """Add the engine's age, its cycle number / 100, as one more input (C-MAPSS histories
    start at cycle 1, so the age is known at prediction time)."""
    extra_train: tuple[str, ...] = ()
    """Other subsets whose training engines join this one's for training (e.g. FD003 for
    FD001: one operating condition each). Each extra file's own validation engines (the same
    seeded split) are left out, and validation stays on this subset's engines alone."""

    def __post_init__(self) -> None:
        self.health_thresholds = tuple(float(t) for t in self.health_thresholds)  # type: ignore
        self.extra_train = tuple(str(n).upper() for n in self.extra_train)
        if self.subset.upper() in self.extra_train or len(set(self.extra_train)) < len(self.extra_train):
            raise ConfigError(f"data.extra_train must name other subsets than {self.subset}, once each,"
                             f" got {list(self.extra_train)}")
        if self.window < 1:
            raise ConfigError(f"data.window must be >= 1, got {self.window}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.baseline_cycles < 0:
            raise ConfigError(f"data.baseline_cycles must be >= 0, got {self.baseline_cycles}")
        for name in ("smoothing", "slow_smoothing"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ConfigError(f"data.{name} must be in (0, 1], got {getattr(self, name)}")
        if not self.health_thresholds[0] > self.health_thresholds[1]:
            raise ConfigError(f"data.health_thresholds must be (high, low), got {self.health_thresholds}")

    @property
    def n_features(self) -> int:
        base = 17 if self.use_settings else 14
        copies = 1 + bool(self.slow_smoothing < 1.0) + bool(self.baseline_cycles)
        return copies * base + int(self.cycle_feature)


@dataclass
class ModelConfig:
    """The CNN-BiLSTM-attention network (spec section 2). Defaults give 3.50 M parameters."""

    in_features: int = 14
    """Inputs per cycle (14 sensors, or 17 with settings)."""
    cnn_channels: tuple[int, ...] = (64, 128, 64)
    """Output channels of the three Conv1d(kernel 3) blocks."""
    cnn_dropout: float = 0.15
    lstm_hidden: int = 256
    """Hidden size per direction of the 2-layer BiLSTM."""
    lstm_layers: int = 2
    lstm_dropout: float = 0.3
    attn_heads: int = 8
    attn_dropout: float = 0.1
    funnel: tuple[int, ...] = (256, 64, 32)
    """Widths of the shared FC funnel after pooling."""
    funnel_dropout: float = 0.2
    rul_head: tuple[int, ...] = (64, 32, 16)
    health_head: tuple[int, ...] = (32, 16)
    n_health: int = 3
    rul_scale: float = RUL_CAP
    """The RUL head predicts RUL / rul_scale; keeps the last layer well conditioned. In a
    :class:`RunConfig` it is set from ``data.rul_cap``."""

    def __post_init__(self) -> None:
        self.cnn_channels = tuple(self.cnn_channels)
        self.funnel = tuple(self.funnel)
        self.rul_head = tuple(self.rul_head)
        self.health_head = tuple(self.health_head)
        if (2 * self.lstm_hidden) % self.attn_heads:
            raise ConfigError(f"2 * model.lstm_hidden ({2 * self.lstm_hidden}) must be divisible by model.attn_heads ({self.attn_heads})")


@dataclass
class TrainConfig:
    """Optimisation (spec section 4), shortened so a run fits in minutes on 2 CPU cores."""

    loss: str = "amnl"
    """One of amnl, amnl-normalized, baseline, gaba, grace."""
    epochs: int = 20
    """Upper bound on epochs; early stopping usually ends sooner."""
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    """Linear warm-up from 0.1 x lr over this many epochs."""
    plateau_patience: int = 2
    """Epochs without validation improvement before the LR is halved."""
    plateau_factor: float = 0.5
    min_lr: float = 5e-6
    early_stop_patience: int = 5
    """Epochs without validation improvement before stopping."""
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    """Upper bound of the EMA decay; warmed up as min(decay, (1 + t) / (10 + t))."""
    precision: str = "auto"
    """Autocast precision: fp32, bf16 (CPU/GPU), fp16 (GPU), or auto: bf16 where the device runs
    it natively (a CPU with AVX-512 BF16 or AMX, most GPUs), else fp32. The saved config names
    the one used."""
    device: str = "cpu"
    """Where the run trains: ``cpu`` or ``cuda[:i]`` (``auto`` is resolved before the run
    starts, so the saved config names the device used)."""
    grad_checkpoint: bool = False
    """Recompute BiLSTM and attention activations in the backward pass (less memory)."""
    noise_std: float = 0.0
    """Gaussian noise added to scaled training inputs (augmentation)."""
    seed: int = 0
    threads: int = 0
    """torch intra-op threads; 0 keeps torch's default."""
    max_train_windows: int = 0
    """If > 0, each epoch samples this many training windows (0 = all)."""
    balance: str = "none"
    """Window sampling: ``none`` (uniform) or ``health`` (each health class drawn equally often,
    so the short degraded and critical phases weigh as much as the long healthy one)."""
    select_metric: str = "rmse"
    """Validation score that drives early stopping, the plateau rule and the kept weights:
    ``rmse`` over all validation windows, or ``rmse_balanced`` (mean squared error averaged over
    the health classes, then the root)."""
    distill: float = 0.0
    """Weight of the teachers' mean prediction in each training window's RUL target,
    ``(1 - distill) * label + distill * teacher`` (0 turns distillation off, 1 learns the
    teachers only); needs ``teacher_targets``. Health labels stay the true ones."""
    teacher_targets: str = ""
    """File written by ``amnl distill-targets``: the teacher runs' mean RUL on every training
    window (see :mod:`amnl.train.distill`)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.distill <= 1.0:
            raise ConfigError(f"train.distill must be in [0, 1], got {self.distill}")
        if self.distill > 0 and not self.teacher_targets:
            raise ConfigError("train.distill > 0 needs train.teacher_targets (a file from `amnl distill-targets`)")
        _one_of("train.loss", self.loss, LOSSES)
        _one_of("train.precision", self.precision, TRAIN_PRECISIONS)
        _one_of("train.balance", self.balance, BALANCES)
        _one_of("train.select_metric", self.select_metric, SELECT_METRICS)
        _check_device("train.device", self.device)
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError(f"train.epochs and train.batch_size must be >= 1, got {self.epochs} and {self.batch_size}")


#: Default peak tensor memory of one inference pass with an automatic batch size, MB: with it
#: `amnl evaluate` peaks at 350-370 MB RSS with torch, 229 MB of them `import torch` (Intel Xeon,
#: family 6, model 207; ``benchmarks/cli_resources.py``).
DEFAULT_MEMORY_BUDGET_MB = 32.0

#: Train fields that change a run, not its recipe (left out of :meth:`RunConfig.recipe`).
RUN_ONLY_FIELDS = ("seed", "threads", "device")

#: Named model sizes: ``base`` is the published 3.5 M-parameter model; ``tiny`` is for tests
#: and CI. :func:`amnl.model.factory.create_model` builds them.
MODEL_SIZES: dict[str, ModelConfig] = {
    "base": ModelConfig(),
    "tiny": ModelConfig(cnn_channels=(8, 16, 8), lstm_hidden=16, attn_heads=2, funnel=(16, 8, 8),
                        rul_head=(8, 8, 8), health_head=(8, 8)),
}


@dataclass
class RunConfig:
    """Everything a run needs; written resolved into the run directory as ``config.json``."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        # derived from the data settings, so that each fact has one place
        self.model.in_features = self.data.n_features
        self.model.rul_scale = float(self.data.rul_cap)
        if self.data.extra_train and self.train.distill > 0:
            raise ConfigError("train.distill and data.extra_train cannot be combined (the teacher "
                             "targets cover one subset's engines)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        def build(klass, sub):
            names = {f.name for f in fields(klass)}
            unknown = set(sub) - names
            if unknown:
                raise ConfigError(f"unknown {klass.__name__} fields: {sorted(unknown)}")
            if not isinstance(sub, dict):
                raise ConfigError(f"{klass.__name__} must be a JSON object, got {sub!r}")
            return klass(**sub)

        return cls(data=build(DataConfig, d.get("data", {})),
                   model=build(ModelConfig, d.get("model", {})),
                   train=build(TrainConfig, d.get("train", {})))

    def recipe(self) -> dict[str, Any]:
        """The settings that make a recipe: everything but the seed, the thread count and the
        device, which change a run, not how it is trained."""
        d = self.to_dict()
        d["train"] = {k: v for k, v in d["train"].items() if k not in RUN_ONLY_FIELDS}
        return d

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        """Read a ``config.json``; a missing or malformed file is a :class:`ConfigError`
        naming it."""
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such config file") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not a JSON config (not UTF-8 text)") from None
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{exc.lineno}:col {exc.colno}: not valid JSON ({exc.msg})"
                              ) from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: a config must be a JSON object")
        try:
            return cls.from_dict(data)
        except TypeError as exc:  # a field of the wrong kind, e.g. a list where a number goes
            raise ConfigError(f"{path}: {exc}") from None
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None


def build_run_config(base: RunConfig | None = None, *, subset: str, size: str | None = None,
                     extra_train: tuple[str, ...] | None = None, **train: Any) -> RunConfig:
    """The run configuration of ``amnl train``: a recipe (or the defaults) with flags on top.

    This is the one place where command-line flags override config fields.

    Args:
        base: the ``--config`` recipe; None starts from the defaults.
        subset: the ``--dataset`` (already checked), which sets ``data.subset``.
        size: a named model size (:data:`MODEL_SIZES`); only without ``base``, whose model
            section already fixes the size.
        extra_train: ``data.extra_train`` (None keeps the recipe's).
        **train: :class:`TrainConfig` fields; None values keep the recipe's. A
            ``teacher_targets`` without ``distill`` (and a recipe without one) distils at 0.5.

    Raises:
        ConfigError: ``size`` with ``base``, an unknown size or field, or an invalid value.

    Example:
        >>> build_run_config(subset="FD002", size="tiny", epochs=2).train.epochs
        2
    """
    if base is not None and size is not None:
        raise ConfigError("--size and --config cannot be combined: the config's model section "
                          "fixes the size (edit it, or drop --config)")
    cfg = base if base is not None else RunConfig()
    model = model_size(size) if size is not None else cfg.model
    known = {f.name for f in fields(TrainConfig)}
    unknown = set(train) - known
    if unknown:
        raise ConfigError(f"unknown train fields: {sorted(unknown)}")
    given = {k: v for k, v in train.items() if v is not None}
    if given.get("teacher_targets") and "distill" not in given and not cfg.train.distill:
        given["distill"] = 0.5
    data = replace(cfg.data, subset=subset)
    if extra_train is not None:
        data = replace(data, extra_train=tuple(extra_train))
    return RunConfig(data, replace(model), replace(cfg.train, **given))


@dataclass
class InferenceConfig:
    """How a model runs: runtime, precision, device, threads and batching.

    Every front door (the CLI, the service, batch scoring) builds one and hands it to
    :meth:`amnl.inference.predictor.Predictor.load`.

    Example:
        >>> InferenceConfig(runtime="onnx", precision="int8").batch_size
        'auto'
    """

    runtime: str = "torch"
    """``torch`` or ``onnx`` (ONNX Runtime; needs ``pip install 'amnl[export]'``)."""
    precision: str = "fp32"
    """torch: fp32, bf16, fp16 (CUDA) or int8 (CPU); onnx: fp32 or int8."""
    device: str = "cpu"
    """``cpu``, ``cuda[:i]`` or ``auto`` (CUDA when available); onnx runs on the CPU."""
    threads: int = 0
    """CPU threads (0 = the library's default). ONNX Runtime takes it per session; torch's
    count is process-wide, so front doors apply it (:func:`amnl.inference.runtime.set_threads`),
    never a constructor."""
    batch_size: int | str = "auto"
    """Windows per forward pass, or ``auto``: the planner's largest batch within
    ``memory_budget_mb`` and half the free memory (torch; measured at load), and for onnx
    :func:`amnl.inference.onnx_runtime.auto_chunk` (64 windows a run, fewer on a machine or
    in a cgroup with under 340 MB)."""
    memory_budget_mb: float | None = DEFAULT_MEMORY_BUDGET_MB
    """With ``auto``: the most peak tensor memory (weights included) one pass may take, MB
    (None: half the free memory only)."""
    max_batch: int = 256
    """With ``auto``: the largest batch (the study's planner caps at 256)."""
    cache_dir: str | None = None
    """Where the onnx runtime exports a run directory's model on first use (default
    ``$XDG_CACHE_HOME/amnl/onnx``, see :func:`amnl.cache.cache_dir`); the path is logged."""

    def __post_init__(self) -> None:
        _one_of("runtime", self.runtime, RUNTIMES)
        allowed = RUNTIME_PRECISIONS[self.runtime]
        if self.precision not in allowed:
            hint = " (bf16/fp16 are torch precisions)" if self.runtime == "onnx" else ""
            raise ConfigError(f"precision must be one of {', '.join(allowed)} with the "
                              f"{self.runtime} runtime{hint}; got {self.precision!r}")
        _check_device("device", self.device)
        if self.runtime == "onnx" and self.device.startswith("cuda"):
            raise ConfigError("the onnx runtime runs on the CPU; use --device cpu or the torch "
                              "runtime on CUDA")
        if self.precision == "fp16" and self.device == "cpu":
            raise ConfigError("fp16 inference needs CUDA; use bf16 or int8 on the CPU")
        if self.precision == "int8" and self.device.startswith("cuda"):
            raise ConfigError("int8 runs on the CPU only; use --device cpu")
        if self.threads < 0:
            raise ConfigError(f"threads must be >= 0, got {self.threads}")
        if self.batch_size in ("auto", 0):
            self.batch_size = "auto"
        elif isinstance(self.batch_size, str) or int(self.batch_size) < 1:
            raise ConfigError(f"batch_size must be >= 1 or 'auto', got {self.batch_size!r}")
        if self.memory_budget_mb is not None and self.memory_budget_mb <= 0:
            raise ConfigError(f"memory_budget_mb must be > 0, got {self.memory_budget_mb}")
        if self.max_batch < 1:
            raise ConfigError(f"max_batch must be >= 1, got {self.max_batch}")

    @property
    def auto_batch(self) -> bool:
        return self.batch_size == "auto"
