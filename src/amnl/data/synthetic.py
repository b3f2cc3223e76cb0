"""A small deterministic C-MAPSS-shaped fleet, written in the real text format.

Unit tests and demos use it so they need no NASA data. Informative sensors drift with an
exponential degradation curve; the others stay at a per-condition constant plus noise.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from amnl.data.cmapss import INFORMATIVE_SENSORS, SENSOR_COLUMNS
from amnl.errors import ConfigError

#: The six (altitude kft, Mach, throttle angle) regimes of FD002/FD004.
REGIMES = np.array([[0.0, 0.0, 100.0], [10.0, 0.25, 100.0], [20.0, 0.70, 100.0],
                    [25.0, 0.62, 60.0], [35.0, 0.84, 100.0], [42.0, 0.84, 100.0]])


def _format_rows(values: np.ndarray) -> str:
    # Same layout as NASA's files: space-separated, two trailing spaces, LF endings.
    out = []
    for row in values:
        cells = [str(int(row[0])), str(int(row[1]))] + [f"{v:.4f}" for v in row[2:]]
        out.append(" ".join(cells) + "  \n")
    return "".join(out)


def _engine(rng: np.random.Generator, unit: int, life: int, n_conditions: int,
            base: np.ndarray, drift: np.ndarray) -> np.ndarray:
    cycles = np.arange(1, life + 1)
    regime = rng.integers(0, n_conditions, size=life) if n_conditions > 1 else np.zeros(life, int)
    settings = REGIMES[regime] + rng.normal(0, [0.001, 0.0002, 0.0], size=(life, 3))
    health = np.exp(3.0 * (cycles / life) ** 2) - 1.0  # 0 -> ~19 at failure
    sensors = base[regime] + health[:, None] * drift[None, :] + rng.normal(0, 0.05, (life, 21))
    return np.column_stack([np.full(life, unit), cycles, settings, sensors])


def make_fleet(n_units: int = 8, n_conditions: int = 1, *, seed: int = 0, min_life: int = 60,
               max_life: int = 120) -> list[np.ndarray]:
    """Full run-to-failure trajectories, one float64 array (life, 26) per engine.

    Args:
        n_units: number of engines.
        n_conditions: 1 (like FD001/FD003) or up to 6 (like FD002/FD004).
        seed: every number is derived from it.
        min_life, max_life: range of engine lifetimes in cycles.
    """
    if not 1 <= n_conditions <= len(REGIMES):
        raise ConfigError(f"n_conditions must be 1..{len(REGIMES)}, got {n_conditions}")
    rng = np.random.default_rng(seed)
    base = rng.uniform(10, 100, size=(len(REGIMES), 21))
    informative = np.array([c in INFORMATIVE_SENSORS for c in SENSOR_COLUMNS])
    drift = np.where(informative, rng.choice([-1.0, 1.0], 21) * rng.uniform(0.2, 0.6, 21), 0.0)
    lives = rng.integers(min_life, max_life + 1, size=n_units)
    return [_engine(rng, u + 1, int(life), n_conditions, base, drift)
            for u, life in enumerate(lives)]


def write_fleet(out_dir: str | os.PathLike, name: str = "FD001", *, n_train: int = 8,
                n_test: int = 4, n_conditions: int = 1, seed: int = 0, min_life: int = 60,
                max_life: int = 120) -> dict[str, Path]:
    """Write ``train_<name>.txt``, ``test_<name>.txt`` and ``RUL_<name>.txt`` into ``out_dir``.

    Test engines are cut at a random cycle (some shorter than a 30-cycle window) and the RUL
    file holds the cycles left after the cut.

    Returns:
        The three paths, keyed ``train``, ``test``, ``rul``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fleet = make_fleet(n_train + n_test, n_conditions, seed=seed, min_life=min_life,
                       max_life=max_life)
    rng = np.random.default_rng(seed + 1)
    train = np.concatenate(fleet[:n_train])
    test_rows, rul = [], []
    for k, eng in enumerate(fleet[n_train:]):
        cut = int(rng.integers(10, len(eng) - 5))
        part = eng[:cut].copy()
        part[:, 0] = k + 1
        test_rows.append(part)
        rul.append(len(eng) - cut)
    paths = {"train": out / f"train_{name}.txt", "test": out / f"test_{name}.txt",
             "rul": out / f"RUL_{name}.txt"}
    paths["train"].write_text(_format_rows(train))
    paths["test"].write_text(_format_rows(np.concatenate(test_rows)))
    paths["rul"].write_text("".join(f"{r} \n" for r in rul))
    return paths
