"""Request and response bodies (pydantic), with the examples ``/docs`` shows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, create_model

from amnl.data.cmapss import SENSOR_COLUMNS, SETTING_COLUMNS
from amnl.features.labels import HEALTH_CLASSES
from amnl.serve.db import ASSET_ID_LENGTH
from amnl.serve.settings import MAX_CYCLE, MAX_FAILURE_GAP

#: Letters, digits, ``.``, ``_`` and ``-``, 1 to 64 of them, starting with a letter or digit
#: (so ``..`` or ``-x`` are not ids).
ASSET_ID_PATTERN = rf"^[A-Za-z0-9][A-Za-z0-9._-]{{0,{ASSET_ID_LENGTH - 1}}}$"
AssetId = Annotated[str, Field(pattern=ASSET_ID_PATTERN, examples=["engine-17"],
                               description="Letters, digits, '.', '_' and '-', starting with a "
                                           "letter or digit; at most 64.")]
#: Largest id (of an alert): the database's INTEGER columns are 32-bit on PostgreSQL.
MAX_ID = 2**31 - 1
#: Most readings in one request.
MAX_READINGS = 20_000
#: Most histories in one ``/v1/predict`` request: each is a forward pass of the model, the
#: request's cost (2,000 single-reading histories took 6.4 s of one thread of a shared 2-core
#: AMD EPYC), held by one worker thread; a larger set is several requests.
MAX_PREDICT_ASSETS = 1_000

_EXAMPLE = {"cycle": 1, "setting_1": -0.0007, "setting_2": -0.0004, "setting_3": 100.0,
            "s_1": 518.67, "s_2": 641.82, "s_3": 1589.7, "s_4": 1400.6, "s_5": 14.62,
            "s_6": 21.61, "s_7": 554.36, "s_8": 2388.06, "s_9": 9046.19, "s_10": 1.3,
            "s_11": 47.47, "s_12": 521.66, "s_13": 2388.02, "s_14": 8138.62, "s_15": 8.4195,
            "s_16": 0.03, "s_17": 392, "s_18": 2388, "s_19": 100.0, "s_20": 39.06,
            "s_21": 23.419}

#: Request bodies take JSON numbers only (``strict``: no ``true``, no ``"641.82"``; a JSON
#: integer is a number, so ``392`` is a float sensor's value) and integers only for cycles.
_STRICT = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class RequestModels(NamedTuple):
    """The reading bodies of one model: its inputs required, the other sensors optional."""

    Reading: type[BaseModel]
    FleetReading: type[BaseModel]
    AssetReadingsIn: type[BaseModel]
    FleetReadingsIn: type[BaseModel]
    PredictIn: type[BaseModel]


def request_models(required: Sequence[str]) -> RequestModels:
    """The request bodies that take readings, for a model that reads ``required`` (settings
    and sensors by name): those are required (a finite number each), the others optional,
    which is what the OpenAPI document then says.

    Args:
        required: the model's inputs (:attr:`amnl.serve.service.FleetService.required_columns`).
    """
    need = set(required)

    def column(c: str, what: str):
        if c in need:
            return float, Field(description=f"{what}; the model reads it (required).")
        return float | None, Field(None, description=f"{what}; the model does not read it.")

    cycle = (int, Field(ge=1, le=MAX_CYCLE, description="Cycle number; an asset's cycles are "
                                                        "consecutive."))
    fields = {**{c: column(c, "Operating setting") for c in SETTING_COLUMNS},
              **{c: column(c, "Sensor") for c in SENSOR_COLUMNS}}
    reading = create_model(
        "Reading", __config__=ConfigDict(**_STRICT, json_schema_extra={"examples": [_EXAMPLE]}),
        __doc__="One cycle of one asset: its number, the operating settings and sensors by "
                "name (finite JSON numbers).", cycle=cycle, **fields)
    fleet_reading = create_model(
        "FleetReading", __config__=ConfigDict(**_STRICT, json_schema_extra={
            "examples": [{"asset_id": "engine-17", **_EXAMPLE}]}),
        __doc__="One cycle of an asset, with the asset's id.",
        asset_id=(AssetId, ...), cycle=cycle, **fields)
    readings = Field(min_length=1, max_length=MAX_READINGS)
    asset_readings = create_model(
        "AssetReadingsIn", __config__=_STRICT,
        __doc__="Consecutive cycles of one asset, applied atomically.",
        readings=(list[reading], readings))
    fleet_readings = create_model(
        "FleetReadingsIn", __config__=_STRICT,
        __doc__="Readings of many assets (e.g. one cycle of the whole fleet), applied "
                "atomically.", readings=(list[fleet_reading], readings))
    history = create_model(
        "AssetHistory", __config__=_STRICT, __doc__="One asset's history, oldest cycle first.",
        asset_id=(AssetId, ...), readings=(list[reading], readings))
    predict = create_model(
        "PredictIn", __config__=_STRICT,
        __doc__="Histories in, one prediction per asset (at its last cycle) out; nothing is "
                "stored.", assets=(list[history], Field(min_length=1,
                                                         max_length=MAX_PREDICT_ASSETS)))
    return RequestModels(reading, fleet_reading, asset_readings, fleet_readings, predict)


class FailureIn(BaseModel):
    """When an asset failed (or was removed from service)."""

    model_config = ConfigDict(**_STRICT, json_schema_extra={"examples": [{"cycle": 212}]})
    cycle: int = Field(ge=1, le=MAX_CYCLE, description="The cycle of the failure: the asset's "
                       f"last cycle, or up to {MAX_FAILURE_GAP} cycles later.")


class AckIn(BaseModel):
    model_config = ConfigDict(**_STRICT,
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
    rul_lower: float | None = Field(description="Calibrated lower bound, at the calibration's "
                                                "nominal coverage (not a measured one: "
                                                "GET /v1/accuracy measures it); null without "
                                                "a calibration.")
    rul_upper: float | None
    health: Literal["healthy", "degrading", "critical"]
    probabilities: Probabilities  # type: ignore[valid-type]
    model_id: str
    time: str = Field(description="When it was made (ISO 8601, UTC).")
    warnings: list[str] = Field(description="What in the input of this prediction lies outside "
                                "the model's training range or history needs (empty: "
                                "nothing); a flagged prediction is a guess.")


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


#: What each error status means (the OpenAPI document's description of it).
ERROR_STATUSES = {
    400: "The Host header names a host this server does not answer for, or the request is not "
         "HTTP.",
    401: "A write without the server's bearer token.",
    404: "No such asset, alert or drift reference.",
    408: "The request body did not arrive within the server's body timeout.",
    409: "Conflicts with what is stored (a re-sent cycle with other values, a closed history).",
    413: "The request body is larger than the server's --max-body-bytes.",
    422: "A value, a parameter or the JSON itself is invalid; `loc` names it.",
    500: "A bug (the server's log has the traceback).",
    503: "The database did not take the write, or the writer did not answer in time.",
}


def errors(*statuses: int) -> dict:
    """``responses=`` of a route: each status with :class:`ErrorOut`'s body."""
    return {s: {"model": ErrorOut, "description": ERROR_STATUSES[s]} for s in statuses}


#: What every operation may answer (the Host check, the body limit and timeout apply to every
#: request, a parameter or body may be invalid, and a bug is a 500 in the same shape).
COMMON_ERRORS = errors(400, 408, 413, 422, 500)
#: What every write may answer besides: no token, the database did not take it.
WRITE_ERRORS = errors(401, 503)
