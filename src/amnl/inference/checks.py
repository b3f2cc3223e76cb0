"""Is an input inside what the model was trained on? Per-unit warnings for the predictions.

A prediction for readings the model never saw is a guess however confident it looks: FD002
readings given to an FD001 model came out "critical" with p 0.999. Three checks, each a
warning on the unit (the prediction is still made; what cannot be right is rejected earlier,
by the readers and :meth:`amnl.features.pipeline.Preprocessor.transform`):

* **unknown operating condition**: a cycle's settings further than
  :data:`SETTING_TOLERANCE` (in every setting's own unit) from every condition centre fitted
  on the training engines; today such a cycle would silently be scaled as the nearest one;
* **sensors beyond the training range**: a per-condition z-score of a model input beyond
  :data:`Z_LIMIT` (the training files reach 9.6);
* **age beyond the longest training engine**: a unit whose last cycle is past the longest
  run-to-failure history of the subsets the model trained on.
"""

from __future__ import annotations

import numpy as np

from amnl.config import RunConfig
from amnl.data.cmapss import SETTING_COLUMNS, EngineTable
from amnl.features.pipeline import Preprocessor

#: A cycle is in a known operating condition when every setting is within this of a centre.
#: Within one condition the C-MAPSS settings vary by at most 0.009 (kft, Mach or degrees;
#: ``experiments/training_ranges.py``, ``benchmarks/results/training-ranges.json``).
SETTING_TOLERANCE = 0.1
#: Largest |z| of a per-condition scaled sensor counted as within the training range: the four
#: training files reach 8.6-9.6 (their test files 4.3-9.9; the same script).
Z_LIMIT = 12.0
#: Longest engine, in cycles, of each published training file (NASA's C-MAPSS; the same script).
LONGEST_TRAINING_ENGINE = {"FD001": 362, "FD002": 378, "FD003": 525, "FD004": 543}


def longest_training_engine(config: RunConfig) -> int:
    """Cycles of the longest training engine of the subsets the run trained on."""
    subsets = (config.data.subset, *config.data.extra_train)
    return max(LONGEST_TRAINING_ENGINE[s] for s in subsets)


def unit_warnings(pre: Preprocessor, config: RunConfig, table: EngineTable,
                  cond: np.ndarray, scaled: np.ndarray) -> list[list[str]]:
    """The warnings of each unit of ``table``, in its unit order (empty lists when fine).

    Args:
        cond, scaled: :meth:`Preprocessor.scale` of ``table`` (the prediction computes them
            anyway).
    """
    starts, lengths = table.starts, table.lengths
    settings = table.columns(SETTING_COLUMNS)
    unknown = (np.abs(settings - pre.conditions_.centers_[cond]) > SETTING_TOLERANCE).any(1)
    beyond = np.abs(scaled) > Z_LIMIT
    n_unknown = np.add.reduceat(unknown.astype(np.int64), starts)
    n_beyond = np.add.reduceat(beyond.any(1).astype(np.int64), starts)
    features = np.add.reduceat(beyond.astype(np.int64), starts, axis=0)
    last_cycle = table.cycle[starts + lengths - 1]
    oldest = longest_training_engine(config)
    names = pre.feature_names
    out: list[list[str]] = []
    for i in range(len(starts)):
        w = []
        if n_unknown[i]:
            first = starts[i] + int(np.flatnonzero(unknown[starts[i]: starts[i] + lengths[i]])[0])
            w.append(f"operating settings far from every training condition in {n_unknown[i]} "
                     f"of {lengths[i]} cycles (first at cycle {int(table.cycle[first])}: "
                     f"{', '.join(f'{v:g}' for v in settings[first])})")
        if n_beyond[i]:
            worst = [names[j] for j in np.argsort(-features[i])[:3] if features[i][j]]
            w.append(f"sensors beyond {Z_LIMIT:g} training standard deviations in {n_beyond[i]} "
                     f"of {lengths[i]} cycles ({', '.join(worst)})")
        if last_cycle[i] > oldest:
            w.append(f"age {int(last_cycle[i])} cycles, beyond the longest training engine "
                     f"({oldest} cycles)")
        out.append(w)
    return out
