"""Request and response bodies (pydantic), with the examples ``/docs`` shows."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from amnl.data.cmapss import SENSOR_COLUMNS, SETTING_COLUMNS
from amnl.features.labels import HEALTH_CLASSES
from amnl.serve.db import ASSET_ID_LENGTH

#: Letters, digits, ``.``, ``_`` and ``-``, 1 to 64 of them, starting with a letter or digit
#: (so ``..`` or ``-x`` are not ids).
ASSET_ID_PATTERN = rf"^[A-Za-z0-9][A-Za-z0-9._-]{{0,{ASSET_ID_LENGTH - 1}}}$"
AssetId = Annotated[str, Field(pattern=ASSET_ID_PATTERN, examples=["engine-17"],
                               description="Letters, digits, '.', '_' and '-', starting with a "
                                           "letter or digit; at most 64.")]
#: Most readings in one request.
MAX_READINGS = 20_000

_EXAMPLE = {"cycle": 1, "setting_1": -0.0007, "setting_2": -0.0004, "setting_3": 100.0,
            "s_1": 518.67, "s_2": 641.82, "s_3": 1589.7, "s_4": 1400.6, "s_5": 14.62,
            "s_6": 21.61, "s_7": 554.36, "s_8": 2388.06, "s_9": 9046.19, "s_10": 1.3,
            "s_11": 47.47, "s_12": 521.66, "s_13": 2388.02, "s_14": 8138.62, "s_15": 8.4195,
            "s_16": 0.03, "s_17": 392, "s_18": 2388, "s_19": 100.0, "s_20": 39.06,
            "s_21": 23.419}

_STRICT = ConfigDict(extra="forbid", allow_inf_nan=False,
                     json_schema_extra={"examples": [_EXAMPLE]})

Reading = create_model(
    "Reading", __config__=_STRICT,
    cycle=(int, Field(ge=1, le=1_000_000_000, description="Cycle number; an asset's cycles "
                                                            "are consecutive.")),
    **{c: (float | None, Field(None, description="Operating setting.")) for c in SETTING_COLUMNS},
    **{c: (float | None, Field(None, description="Sensor; the model's sensors are required."))
       for c in SENSOR_COLUMNS},
)
Reading.__doc__ = ("One cycle of one asset: its number, the 3 operating settings and the "
                   "sensors s_1..s_21 by name (finite numbers).")

FleetReading = create_model(
    "FleetReading", __base__=Reading,
    __config__=None,
    asset_id=(AssetId, ...),
)
FleetReading.model_config = ConfigDict(
    extra="forbid", allow_inf_nan=False,
    json_schema_extra={"examples": [{"asset_id": "engine-17", **_EXAMPLE}]})
FleetReading.model_rebuild(force=True)


class AssetReadingsIn(BaseModel):
    """Consecutive cycles of one asset, applied atomically."""

    model_config = ConfigDict(extra="forbid")
    readings: list[Reading] = Field(min_length=1, max_length=MAX_READINGS)  # type: ignore[valid-type]


class FleetReadingsIn(BaseModel):
    """Readings of many assets (e.g. one cycle of the whole fleet), applied atomically."""

    model_config = ConfigDict(extra="forbid")
    readings: list[FleetReading] = Field(min_length=1, max_length=MAX_READINGS)  # type: ignore[valid-type]


class AssetHistory(BaseModel):
    model_config = ConfigDict(extra="forbid")
    asset_id: AssetId
    readings: list[Reading] = Field(min_length=1, max_length=MAX_READINGS)  # type: ignore[valid-type]


class PredictIn(BaseModel):
    """Histories in, one prediction per asset (at its last cycle) out; nothing is stored."""

    model_config = ConfigDict(extra="forbid")
    assets: list[AssetHistory] = Field(min_length=1, max_length=10_000)


class FailureIn(BaseModel):
    """When an asset failed (or was removed from service)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"cycle": 212}]})
    cycle: int = Field(ge=1, description="The cycle of the failure: its last cycle, or later.")


class AckIn(BaseModel):
    model_config = ConfigDict(extra="forbid",
                              json_schema_extra={"examples": [{"note": "borescope booked"}]})
    note: str | None = Field(None, max_length=1000)


class AssetAck(BaseModel):
    asset_id: str
    accepted: int = Field(description="New cycles stored.")
    duplicates: int = Field(description="Cycles already stored with the same values (no-op).")
    last_cycle: int


class IngestOut(BaseModel):
    accepted: int
    duplicates: int
    assets: list[AssetAck]


Probabilities = create_model("Probabilities", **{c: (float, ...) for c in HEALTH_CLASSES})


class PredictionOut(BaseModel):
    asset_id: str
    cycle: int = Field(description="The cycle the prediction is made at.")
    rul: float = Field(description="Remaining useful life, cycles.")
    rul_lower: float | None = Field(description="Calibrated lower bound (the model's stated "
                                                "coverage; null without a calibration).")
    rul_upper: float | None
    health: Literal["healthy", "degrading", "critical"]
    probabilities: Probabilities  # type: ignore[valid-type]
    model_id: str
    time: str = Field(description="When it was made (ISO 8601, UTC).")


class AssetOut(BaseModel):
    asset_id: str
    first_cycle: int
    last_cycle: int
    n_readings: int
    pending: int = Field(description="Readings after the latest prediction still being "
                                     "predicted.")
    created_at: str
    updated_at: str
    failure_cycle: int | None = None
    prediction: PredictionOut | None


class FleetOut(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[AssetOut]


class StatelessPrediction(BaseModel):
    asset_id: str
    cycle: int
    rul: float
    rul_lower: float | None
    rul_upper: float | None
    health: str
    probabilities: Probabilities  # type: ignore[valid-type]
    warnings: list[str]


class PredictOut(BaseModel):
    model_id: str
    predictions: list[StatelessPrediction]


class ErrorItem(BaseModel):
    loc: list[Any]
    msg: str
    type: str


class ErrorOut(BaseModel):
    """Every 4xx/5xx: where (``loc``: body, readings, index, field), why (``msg``), a stable
    ``type``."""

    detail: list[ErrorItem]


ERRORS = {s: {"model": ErrorOut} for s in (401, 404, 409, 413, 422, 503)}
