"""Typed configuration: one dataclass per stage, nested in :class:`RunConfig`.

Defaults are the spec's (``../shared/spec/AMNL.md``); every spec *decision* is a field here.
Imports nothing heavier than the standard library.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

LOSSES = ("amnl", "amnl-normalized", "baseline", "gaba", "grace")
PRECISIONS = ("fp32", "bf16", "fp16")
#: Per-epoch sampling of training windows.
BALANCES = ("none", "health")
#: Validation metric for early stopping, the LR plateau and the best checkpoint.
SELECT_METRICS = ("rmse", "rmse_balanced")


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
    rul_cap: float = 125.0
    """Piecewise-linear RUL cap."""
    health_thresholds: tuple[float, float] = (80.0, 30.0)
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
            raise ValueError(f"extra_train must name other subsets than {self.subset}, once each,"
                             f" got {list(self.extra_train)}")
        if self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.baseline_cycles < 0:
            raise ValueError(f"baseline_cycles must be >= 0, got {self.baseline_cycles}")
        for name in ("smoothing", "slow_smoothing"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)}")
        if not self.health_thresholds[0] > self.health_thresholds[1]:
            raise ValueError(f"health_thresholds must be (high, low), got {self.health_thresholds}")

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
    rul_scale: float = 125.0
    """The RUL head predicts RUL / rul_scale; keeps the last layer well conditioned."""

    def __post_init__(self) -> None:
        self.cnn_channels = tuple(self.cnn_channels)
        self.funnel = tuple(self.funnel)
        self.rul_head = tuple(self.rul_head)
        self.health_head = tuple(self.health_head)
        if (2 * self.lstm_hidden) % self.attn_heads:
            raise ValueError("2 * lstm_hidden must be divisible by attn_heads")


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
    precision: str = "bf16"
    """Autocast precision: fp32, bf16 (CPU/GPU) or fp16 (GPU)."""
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
            raise ValueError(f"distill must be in [0, 1], got {self.distill}")
        if self.distill > 0 and not self.teacher_targets:
            raise ValueError("distill > 0 needs teacher_targets (a file from `amnl distill-targets`)")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.balance not in BALANCES:
            raise ValueError(f"balance must be one of {BALANCES}, got {self.balance!r}")
        if self.select_metric not in SELECT_METRICS:
            raise ValueError(f"select_metric must be one of {SELECT_METRICS}, "
                             f"got {self.select_metric!r}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be >= 1")


@dataclass
class RunConfig:
    """Everything a run needs; written resolved into the run directory as ``config.json``."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if self.model.in_features != self.data.n_features:
            self.model.in_features = self.data.n_features
        if self.data.extra_train and self.train.distill > 0:
            raise ValueError("train.distill and data.extra_train cannot be combined (the teacher "
                             "targets cover one subset's engines)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        def build(klass, sub):
            names = {f.name for f in fields(klass)}
            unknown = set(sub) - names
            if unknown:
                raise ValueError(f"unknown {klass.__name__} fields: {sorted(unknown)}")
            return klass(**sub)

        return cls(data=build(DataConfig, d.get("data", {})),
                   model=build(ModelConfig, d.get("model", {})),
                   train=build(TrainConfig, d.get("train", {})))

    def recipe(self) -> dict[str, Any]:
        """The settings that make a recipe: everything but the seed and the thread count, which
        change a run, not how it is trained."""
        d = self.to_dict()
        d["train"] = {k: v for k, v in d["train"].items() if k not in ("seed", "threads")}
        return d

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))
