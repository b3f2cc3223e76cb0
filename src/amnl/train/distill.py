"""Distillation: train one network on the mean prediction of several (teacher) runs.

Averaging the predictions of a few seeds of a recipe beats every single seed (docs/results.md),
but costs their number in inference time. Distillation keeps one network: the student's RUL
target on each training window becomes ``(1 - w) * label + w * teacher mean`` (``train.distill``
= ``w``), with the teachers' mean read from a file that ``amnl distill-targets`` writes once.

Honesty: teachers must have held out exactly the student's validation engines (same subset, same
``split_seed`` and ``val_fraction``), so no teacher has trained on an engine the student is
validated on; :meth:`TeacherTargets.check_split` enforces it. Test files are never read.
The student's validation score is still optimistic next to an undistilled run's: the teachers'
epochs were chosen on those same validation engines, and the student learns the chosen models
(docs/campaigns/08-distillation.md measured that on C-MAPSS: students won on validation and not
on test).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from amnl.errors import DataError
from amnl.rundir import TARGETS_FILE

__all__ = ["TARGETS_FILE", "TeacherTargets", "compute_teacher_targets", "distilled_rul"]


@dataclass
class TeacherTargets:
    """The teachers' mean RUL prediction on every window of a training file.

    Attributes:
        subset: C-MAPSS subset of the teachers.
        unit, cycle: int64 (n,) engine and last cycle of each window.
        rul: float32 (n,) mean teacher prediction (cycles).
        spread: float32 (n,) standard deviation of the teachers' predictions.
        val_units: int64 validation engines the teachers held out (all the same).
        teachers: the teacher run directories, as given.
    """

    subset: str
    unit: np.ndarray
    cycle: np.ndarray
    rul: np.ndarray
    spread: np.ndarray
    val_units: np.ndarray
    teachers: tuple[str, ...]

    def save(self, path: str | Path) -> None:
        meta = json.dumps({"subset": self.subset, "teachers": list(self.teachers)})
        with open(path, "wb") as f:  # np.savez would append .npz to a name without it
            np.savez(f, unit=self.unit, cycle=self.cycle, rul=self.rul, spread=self.spread,
                     val_units=self.val_units, meta=np.array(meta))

    @classmethod
    def load(cls, path: str | Path) -> TeacherTargets:
        if not Path(path).is_file():
            raise DataError(f"teacher targets {path}: no such file (a relative path is read "
                                    "from the working directory: run from the repository root)")
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                return cls(meta["subset"], z["unit"], z["cycle"], z["rul"], z["spread"],
                           z["val_units"], tuple(meta["teachers"]))
        except (OSError, KeyError, ValueError) as e:
            raise DataError(f"{path}: not a teacher-targets file from `amnl distill-targets` "
                             f"({e})") from e

    def check_split(self, subset: str, val_units: np.ndarray) -> None:
        """Raise unless the teachers were trained on ``subset`` with these validation engines."""
        if self.subset != subset:
            raise DataError(f"teacher targets are for {self.subset}, the run trains {subset}")
        if not np.array_equal(np.sort(self.val_units), np.sort(np.asarray(val_units))):
            raise DataError("the teachers held out other validation engines than this run "
                             f"({sorted(self.val_units.tolist())} against "
                             f"{sorted(np.asarray(val_units).tolist())}): they have trained on "
                             "its validation engines; use the same data.split_seed and val_fraction")

    def lookup(self, unit: np.ndarray, cycle: np.ndarray) -> np.ndarray:
        """The teachers' mean for windows ending at (``unit``, ``cycle``); every one must exist."""
        keys = _keys(self.unit, self.cycle)
        order = np.argsort(keys)
        want = _keys(np.asarray(unit), np.asarray(cycle))
        pos = np.clip(np.searchsorted(keys[order], want), 0, len(keys) - 1)
        found = keys[order][pos] == want
        if not found.all():
            i = int(np.flatnonzero(~found)[0])
            raise DataError(f"no teacher prediction for unit {int(unit[i])} cycle {int(cycle[i])} "
                             f"({int((~found).sum())} windows missing): were the teachers trained "
                             "with the same window length?")
        return self.rul[order][pos]


def _keys(unit: np.ndarray, cycle: np.ndarray) -> np.ndarray:
    return unit.astype(np.int64) * 1_000_000 + cycle.astype(np.int64)


def distilled_rul(label: np.ndarray, teacher: np.ndarray, weight: float, cap: float) -> np.ndarray:
    """``(1 - weight) * label + weight * teacher``, the teacher clipped to ``[0, cap]``.

    Example:
        >>> distilled_rul(np.array([100.0, 125.0]), np.array([90.0, 140.0]), 0.5, 125.0).tolist()
        [95.0, 125.0]
    """
    t = np.clip(np.asarray(teacher, np.float64), 0.0, cap)
    return ((1.0 - weight) * np.asarray(label, np.float64) + weight * t).astype(np.float32)


def compute_teacher_targets(runs: list[str | Path], data_dir: str | Path, *,
                            device: str = "cpu") -> TeacherTargets:
    """Predict every window of the teachers' training file with each teacher; average.

    Args:
        runs: run directories of the teachers (same subset, window and validation split).
        data_dir: C-MAPSS folder (only ``train_FDxxx.txt`` is read).

    Raises:
        DataError: no runs, or teachers that disagree on subset, window or validation engines.
    """
    from amnl.config import DEFAULT_MEMORY_BUDGET_MB
    from amnl.data.cmapss import load_subset
    from amnl.inference.runtime import TorchRuntime
    from amnl.rundir import load_run

    if not runs:
        raise DataError("give at least one teacher run")
    preds, ref, subset, table = [], None, None, None
    for run in runs:
        cfg, pre, model = load_run(run, device=device)
        if subset is None:
            subset = cfg.data.subset
            table = load_subset(data_dir, subset, test=False).train
        elif cfg.data.subset != subset:
            raise DataError(f"{run}: trained on {cfg.data.subset}, the first teacher on {subset}")
        _, val_units = pre.split_units(table)
        w = pre.windows(table)
        if ref is None:
            ref = (w.unit, w.cycle, val_units)
        elif not (np.array_equal(w.unit, ref[0]) and np.array_equal(w.cycle, ref[1])
                  and np.array_equal(val_units, ref[2])):
            raise DataError(f"{run}: other windows or validation engines than {runs[0]} "
                             "(data.window, split_seed and val_fraction must match)")
        # planner-sized batches, as every inference path of the CLI
        runtime = TorchRuntime(model, device=device, batch_size="auto",
                               memory_budget_mb=DEFAULT_MEMORY_BUDGET_MB, window=cfg.data.window)
        rul, _ = runtime(w.arrays())
        preds.append(rul)
    stack = np.stack(preds)
    return TeacherTargets(subset, ref[0], ref[1], stack.mean(0).astype(np.float32),
                          stack.std(0).astype(np.float32), ref[2].astype(np.int64),
                          tuple(str(r) for r in runs))
