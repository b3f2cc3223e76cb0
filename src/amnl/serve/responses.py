"""The API's response bodies, shaped from the store's rows (the dicts of
:mod:`amnl.serve.store`); the pydantic models they follow are in :mod:`amnl.serve.schemas`."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timezone

import numpy as np

from amnl.features.labels import HEALTH_CLASSES
from amnl.serve.db import PROBABILITY_COLUMNS


def iso(t: float | None) -> str | None:
    """A stored UNIX time as ISO 8601 in UTC."""
    return None if t is None else datetime.fromtimestamp(t, timezone.utc).isoformat()


def prediction_out(row: dict) -> dict:
    """A prediction row (or an asset row with its latest prediction) as ``PredictionOut``."""
    return {"asset_id": row["asset_id"], "cycle": row.get("predicted_cycle", row.get("cycle")),
            "rul": row["rul"], "rul_lower": row.get("rul_lower"), "rul_upper": row.get("rul_upper"),
            "health": row["health"],
            "probabilities": {c: row[f"p_{c}"] for c in HEALTH_CLASSES},
            "model_id": row["model_id"], "time": iso(row["predicted_at"]),
            "warnings": warnings(row)}


def warnings(row: dict) -> list[str]:
    """A row's input warnings (the stored JSON list; NULL, or a row of schema 2: none)."""
    return json.loads(row.get("warnings") or "[]")


def asset_out(row: dict) -> dict:
    """An asset row as ``AssetOut``."""
    predicted = row["predicted_cycle"]
    return {"asset_id": row["asset_id"], "first_cycle": row["first_cycle"],
            "last_cycle": row["last_cycle"], "n_readings": row["n_readings"],
            # the service's count of readings without a prediction (FleetService.with_pending)
            "pending": row["pending"],
            "created_at": iso(row["created_at"]), "updated_at": iso(row["updated_at"]),
            "failure_cycle": row.get("failure_cycle"),
            "prediction": prediction_out(row) if predicted is not None else None}


def alert_out(row: dict) -> dict:
    """An alert row as the API's alert (raised, acknowledged and cleared, each with its cycle)."""
    return {"id": row["id"], "asset_id": row["asset_id"], "rule": row["rule"],
            "severity": row["severity"], "state": row["state"], "message": row["message"],
            "warnings": warnings(row),
            "raised": {"at": iso(row["raised_at"]), "cycle": row["raised_cycle"],
                       "value": row["raised_value"]},
            "acknowledged": None if row["acknowledged_at"] is None else {
                "at": iso(row["acknowledged_at"]), "cycle": row["acknowledged_cycle"],
                "note": row["ack_note"]},
            "cleared": None if row["cleared_at"] is None else {
                "at": iso(row["cleared_at"]), "cycle": row["cleared_cycle"],
                "value": row["cleared_value"]}}


def ingest_out(summary: list[dict]) -> dict:
    """The writer's per-asset summaries as ``IngestOut``."""
    return {"accepted": sum(s["accepted"] for s in summary),
            "duplicates": sum(s["duplicates"] for s in summary), "assets": summary}


def predictions_csv(rows: list[dict]) -> str:
    """Prediction rows as CSV (one line per cycle, a header first)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["asset_id", "cycle", "rul", "rul_lower", "rul_upper", "health",
                *PROBABILITY_COLUMNS, "model_id", "time", "warnings"])
    for r in rows:
        w.writerow([r["asset_id"], r["cycle"], f"{r['rul']:.4f}",
                    *("" if r[k] is None else f"{r[k]:.4f}" for k in ("rul_lower", "rul_upper")),
                    r["health"], *(f"{r[c]:.6f}" for c in PROBABILITY_COLUMNS),
                    r["model_id"], iso(r["predicted_at"]), "; ".join(warnings(r))])
    return buf.getvalue()


def stateless_out(out, table, ids: list[str]) -> list[dict]:
    """``Predictor.predict_table``'s output as ``StatelessPrediction`` items.

    Args:
        out: the predictor's output (one row per unit of ``table``).
        table: the :class:`amnl.data.cmapss.EngineTable` it was made from (units 1..n).
        ids: the asset id of unit ``k + 1`` at ``ids[k]``.
    """
    n = len(out.unit)
    lower = out.rul_lower if out.rul_lower is not None else [None] * n
    upper = out.rul_upper if out.rul_upper is not None else [None] * n
    return [{"asset_id": ids[int(u) - 1], "cycle": int(table.cycle[s + k - 1]),
             "rul": float(r), "rul_lower": None if lo is None else float(lo),
             "rul_upper": None if hi is None else float(hi),
             "health": HEALTH_CLASSES[int(np.argmax(p))],
             "probabilities": dict(zip(HEALTH_CLASSES, map(float, p))), "warnings": w}
            for u, r, p, w, s, k, lo, hi in zip(out.unit, out.rul, out.probabilities,
                                                out.warnings, table.starts, table.lengths,
                                                lower, upper)]
