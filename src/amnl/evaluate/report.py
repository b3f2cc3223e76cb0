"""Per-engine CSV and plot of a test evaluation."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np

from amnl.evaluate.evaluate import TestReport
from amnl.features.labels import HEALTH_CLASSES

logger = logging.getLogger(__name__)
CSV_FILE = "predictions.csv"
PLOT_FILE = "predictions.png"


def read_predictions(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(unit, true RUL, predicted RUL) per engine, in file order, from a ``predictions.csv``
    that :func:`write_report` wrote (true RUL capped as evaluated)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return (np.array([int(r["unit"]) for r in rows], np.int64),
            np.array([float(r["true_rul"]) for r in rows]),
            np.array([float(r["pred_rul"]) for r in rows]))


def write_report(report: TestReport, out_dir: str | Path, title: str) -> list[Path]:
    """Write ``predictions.csv`` (unit, true RUL, predicted RUL, health class, probabilities,
    and the input warnings when the report has them)
    and ``predictions.png`` (predicted vs true RUL per engine, sorted by true RUL).

    The plot needs matplotlib (``pip install amnl[plot]``); without it only the CSV is written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / CSV_FILE]
    with open(out / CSV_FILE, "w", newline="") as f:
        w = csv.writer(f)
        checked = report.warnings is not None
        w.writerow(["unit", "true_rul", "pred_rul", "health", *[f"p_{c}" for c in HEALTH_CLASSES],
                    *(["warnings"] if checked else [])])
        warned = report.warnings if checked else [None] * len(report.unit)
        for u, t, p, prob, ws in zip(report.unit, report.true_rul, report.pred_rul,
                                     report.probabilities, warned):
            w.writerow([int(u), f"{t:g}", f"{p:.3f}", HEALTH_CLASSES[int(np.argmax(prob))],
                        *[f"{v:.5f}" for v in prob], *(["; ".join(ws)] if checked else [])])
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed (pip install 'amnl[plot]'): no plot written")
        return written
    order = np.argsort(report.true_rul, kind="stable")
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.plot(report.true_rul[order], "k-", label="true RUL (capped)")
    ax.plot(report.pred_rul[order], "o", ms=3, color="tab:red", label="predicted RUL")
    m = report.metrics
    ax.set(xlabel="test engine (sorted by true RUL)", ylabel="RUL (cycles)",
           title=f"{title}: RMSE {m['rmse']:.2f}, NASA {m['nasa']:.0f}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / PLOT_FILE, dpi=120)
    plt.close(fig)
    written.append(out / PLOT_FILE)
    return written
