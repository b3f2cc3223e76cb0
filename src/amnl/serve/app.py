"""The HTTP front door of :class:`~amnl.serve.service.FleetService` (FastAPI).

``create_app(settings)`` returns the app; ``amnl serve`` runs it with uvicorn. OpenAPI at
``/docs`` (and ``/openapi.json``). Every error is a 4xx/5xx with
:class:`~amnl.serve.schemas.ErrorOut`'s body.
"""


import csv
import hmac
import io
import time
from contextlib import asynccontextmanager
from dataclasses import asdict
from datetime import datetime, timezone
from typing import Annotated, Literal

import numpy as np
from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from amnl import __version__
from amnl.data.cmapss import COLUMNS, EngineTable
from amnl.errors import DataError
from amnl.features.labels import HEALTH_CLASSES
from amnl.features.online import READING_COLUMNS
from amnl.serve.db import PROBABILITY_COLUMNS
from amnl.serve.errors import ApiError
from amnl.serve.schemas import (
    ASSET_ID_PATTERN,
    ERRORS,
    AckIn,
    AssetOut,
    AssetReadingsIn,
    FailureIn,
    FleetOut,
    FleetReadingsIn,
    IngestOut,
    PredictIn,
    PredictOut,
)
from amnl.serve.service import FleetService
from amnl.serve.settings import ServeSettings
from amnl.serve.writer import AssetReadings

#: ``open`` (both active states) or one state.
AlertFilter = Literal["open", "active_unacknowledged", "active_acknowledged",
                      "cleared_unacknowledged", "cleared_acknowledged"]
AssetPath = Annotated[str, Path(pattern=ASSET_ID_PATTERN, description="The asset's id.")]


def iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, timezone.utc).isoformat()


def prediction_out(row: dict) -> dict:
    return {"asset_id": row["asset_id"], "cycle": row.get("predicted_cycle", row.get("cycle")),
            "rul": row["rul"], "rul_lower": row.get("rul_lower"), "rul_upper": row.get("rul_upper"),
            "health": row["health"],
            "probabilities": {c: row[f"p_{c}"] for c in HEALTH_CLASSES},
            "model_id": row["model_id"], "time": iso(row["predicted_at"])}


def asset_out(row: dict) -> dict:
    predicted = row["predicted_cycle"]
    return {"asset_id": row["asset_id"], "first_cycle": row["first_cycle"],
            "last_cycle": row["last_cycle"], "n_readings": row["n_readings"],
            "pending": row["last_cycle"] - (predicted if predicted is not None
                                            else row["first_cycle"] - 1),
            "created_at": iso(row["created_at"]), "updated_at": iso(row["updated_at"]),
            "failure_cycle": row.get("failure_cycle"),
            "prediction": prediction_out(row) if predicted is not None else None}


def alert_out(row: dict) -> dict:
    return {"id": row["id"], "asset_id": row["asset_id"], "rule": row["rule"],
            "severity": row["severity"], "state": row["state"], "message": row["message"],
            "raised": {"at": iso(row["raised_at"]), "cycle": row["raised_cycle"],
                       "value": row["raised_value"]},
            "acknowledged": None if row["acknowledged_at"] is None else {
                "at": iso(row["acknowledged_at"]), "cycle": row["acknowledged_cycle"],
                "note": row["ack_note"]},
            "cleared": None if row["cleared_at"] is None else {
                "at": iso(row["cleared_at"]), "cycle": row["cleared_cycle"],
                "value": row["cleared_value"]}}


class _Limits:
    """Pure ASGI middleware: the request body size limit and the latency metric by route."""

    def __init__(self, app, service: FleetService, max_body: int) -> None:
        self.app, self.service, self.max_body = app, service, max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status = {"code": 500}
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            await _too_large(send, self.max_body)
            status["code"] = 413
        else:
            seen = 0

            async def limited():
                nonlocal seen
                message = await receive()
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise _TooLarge()
                return message

            async def sending(message):
                if message["type"] == "http.response.start":
                    status["code"] = message["status"]
                await send(message)

            try:
                await self.app(scope, limited, sending)
            except _TooLarge:
                await _too_large(send, self.max_body)
                status["code"] = 413
        route = scope.get("route")
        self.service.metrics.request_seconds.labels(
            scope["method"], getattr(route, "path", "unmatched"), str(status["code"])
        ).observe(time.perf_counter() - t0)


class _TooLarge(Exception):
    pass


async def _too_large(send, limit: int) -> None:
    body = JSONResponse(ApiError(413, ["body"], f"request body is larger than {limit} bytes",
                                 "too_large").body(), status_code=413)
    await body({"type": "http"}, None, send)


def create_app(settings: ServeSettings, predictor=None) -> FastAPI:
    """The FastAPI app of a :class:`FleetService` (started and stopped by its lifespan)."""
    service = FleetService(settings, predictor)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        await run_in_threadpool(service.start)
        try:
            yield
        finally:
            await run_in_threadpool(service.stop)

    app = FastAPI(title="amnl serve", version=__version__, lifespan=lifespan,
                  description="Remaining useful life and health state of every asset of a "
                              "fleet, updated with each reading. Writes need `Authorization: "
                              "Bearer <token>` when the server has a token.")
    app.state.service = service
    app.add_middleware(_Limits, service=service, max_body=settings.max_body_bytes)
    bearer = HTTPBearer(auto_error=False)

    async def authorized(creds: Annotated[HTTPAuthorizationCredentials | None,
                                          Depends(bearer)]) -> None:
        token = settings.api_token
        if token is None:
            return
        if creds is None or not hmac.compare_digest(creds.credentials.encode(), token.encode()):
            raise ApiError(401, ["header", "Authorization"], "a valid bearer token is needed "
                           "for writes", "unauthorized")

    # writes carry the token check only when there is a token (a dependency costs per request)
    writes = [Depends(authorized)] if settings.api_token else []

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError):
        # the same shape as every other error; the offending input is not echoed (it may be
        # a NaN, which JSON cannot carry, or large)
        return JSONResponse({"detail": [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]}
                                        for e in exc.errors()]}, status_code=422)

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError):
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse(exc.body(), status_code=exc.status, headers=headers)

    def to_parts(readings, asset_of, prefix: list) -> list[AssetReadings]:
        """Readings grouped by asset in order, checked: required columns present, each asset's
        cycles increasing by one within the request. ``prefix`` locates ``readings`` in the
        body."""
        need = service.online.required  # the model is loaded by the lifespan
        groups: dict[str, tuple[list, list, list]] = {}
        for i, r in enumerate(readings):
            d = r.__dict__
            for c in need:
                if d[c] is None:
                    raise ApiError(422, [*prefix, i, c], f"{c} is required by the model "
                                   f"(it reads {', '.join(need)})", "missing")
            a = asset_of(r)
            cycles, raws, locs = groups.setdefault(a, ([], [], []))
            if cycles and d["cycle"] != cycles[-1] + 1:
                raise ApiError(422, [*prefix, i, "cycle"], f"asset {a}: cycle {d['cycle']} "
                               f"follows cycle {cycles[-1]} in this request; expected "
                               f"{cycles[-1] + 1}", "cycle_order",
                               expected_cycle=cycles[-1] + 1)
            cycles.append(d["cycle"])
            raws.append([np.nan if d[c] is None else d[c] for c in READING_COLUMNS])
            locs.append([*prefix, i])
        return [AssetReadings(a, np.array(c, np.int64), np.array(r, np.float64), loc)
                for a, (c, r, loc) in groups.items()]

    def ingest_out(summary: list[dict]) -> dict:
        return {"accepted": sum(s["accepted"] for s in summary),
                "duplicates": sum(s["duplicates"] for s in summary), "assets": summary}

    def reject(parts_error: ApiError, n: int) -> None:
        service.metrics.rejected.labels(parts_error.detail[0]["type"]).inc(n)

    @app.post("/v1/assets/{asset_id}/readings", response_model=IngestOut, responses=ERRORS,
              dependencies=writes, tags=["readings"])
    async def post_asset_readings(asset_id: AssetPath, body: AssetReadingsIn):
        """Store one or more consecutive cycles of one asset, atomically; answers once they
        are durable. A re-sent cycle with the same values is a no-op; with other values a 409;
        a gap or an out-of-order cycle a 422 naming the expected cycle."""
        try:
            parts = to_parts(body.readings, lambda _r: asset_id, ["body", "readings"])
        except ApiError as exc:
            reject(exc, len(body.readings))
            raise
        return ingest_out(await service.ingest(parts))

    @app.post("/v1/readings", response_model=IngestOut, responses=ERRORS,
              dependencies=writes, tags=["readings"])
    async def post_fleet_readings(body: FleetReadingsIn):
        """Store readings of many assets (a gateway posting one cycle of the whole fleet),
        atomically: one refused reading refuses the request, and nothing of it is stored."""
        try:
            parts = to_parts(body.readings, lambda r: r.asset_id, ["body", "readings"])
        except ApiError as exc:
            reject(exc, len(body.readings))
            raise
        return ingest_out(await service.ingest(parts))

    @app.get("/v1/assets", response_model=FleetOut, tags=["assets"])
    def list_assets(health: Literal["healthy", "degrading", "critical"] | None = None,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                    offset: Annotated[int, Query(ge=0)] = 0):
        """The fleet, most urgent first (lowest predicted RUL; unpredicted assets last)."""
        total, rows = service.store.fleet(health=health, limit=limit, offset=offset)
        return {"total": total, "limit": limit, "offset": offset,
                "items": [asset_out(r) for r in rows]}

    def found(asset_id: str) -> dict:
        row = service.store.asset(asset_id)
        if row is None:
            raise ApiError(404, ["path", "asset_id"], f"no asset {asset_id}", "not_found")
        return row

    @app.get("/v1/assets/{asset_id}", response_model=AssetOut, responses=ERRORS, tags=["assets"])
    def get_asset(asset_id: AssetPath):
        """The asset's latest prediction (RUL, health, probabilities, cycle, model, time)."""
        return asset_out(found(asset_id))

    @app.get("/v1/assets/{asset_id}/predictions", responses={
        **ERRORS, 200: {"content": {"application/json": {}, "text/csv": {}},
                        "description": "The predictions, oldest first."}}, tags=["assets"])
    def get_predictions(asset_id: AssetPath, format: Literal["json", "csv"] = "json",
                        from_cycle: Annotated[int | None, Query(ge=0)] = None,
                        to_cycle: Annotated[int | None, Query(ge=0)] = None,
                        limit: Annotated[int | None, Query(ge=1)] = None):
        """Every prediction of the asset (one per cycle), as JSON or CSV."""
        found(asset_id)
        rows = service.store.predictions(asset_id, from_cycle=from_cycle, to_cycle=to_cycle,
                                         limit=limit)
        if format == "csv":
            buf = io.StringIO()
            w = csv.writer(buf, lineterminator="\n")
            w.writerow(["asset_id", "cycle", "rul", "rul_lower", "rul_upper", "health",
                        *PROBABILITY_COLUMNS, "model_id", "time"])
            for r in rows:
                w.writerow([r["asset_id"], r["cycle"], f"{r['rul']:.4f}",
                            *("" if r[k] is None else f"{r[k]:.4f}" for k in ("rul_lower",
                                                                              "rul_upper")),
                            r["health"], *(f"{r[c]:.6f}" for c in PROBABILITY_COLUMNS),
                            r["model_id"], iso(r["predicted_at"])])
            return PlainTextResponse(buf.getvalue(), media_type="text/csv", headers={
                "Content-Disposition": f'attachment; filename="{asset_id}-predictions.csv"'})
        return JSONResponse({"asset_id": asset_id,
                             "predictions": [prediction_out(r) for r in rows]})

    @app.delete("/v1/assets/{asset_id}", status_code=204, responses=ERRORS,
                dependencies=writes, tags=["assets"])
    async def delete_asset(asset_id: AssetPath):
        """Forget the asset: its readings, predictions and state."""
        if not await service.delete(asset_id):
            raise ApiError(404, ["path", "asset_id"], f"no asset {asset_id}", "not_found")
        return Response(status_code=204)

    @app.post("/v1/predict", response_model=PredictOut, responses=ERRORS,
              dependencies=writes, tags=["predict"])
    def predict(body: PredictIn):
        """Stateless: each asset's history in, its prediction at the last cycle out (as `amnl
        predict` gives), with warnings where the input lies outside the training range."""
        values, ids = [], []
        for k, h in enumerate(body.assets):
            for part in to_parts(h.readings, lambda _r, a=h.asset_id: a,
                                 ["body", "assets", k, "readings"]):
                values.append(np.column_stack([np.full(len(part.cycles), k + 1),
                                               part.cycles, part.raw]))
            ids.append(h.asset_id)
        table = EngineTable("request", np.concatenate(values)[:, _TABLE_ORDER])
        try:
            out = service.predictor.predict_table(table)
        except DataError as exc:
            raise ApiError(422, ["body", "assets"], str(exc), "value_error") from None
        lower = out.rul_lower if out.rul_lower is not None else [None] * len(out.unit)
        upper = out.rul_upper if out.rul_upper is not None else [None] * len(out.unit)
        preds = [{"asset_id": ids[int(u) - 1],
                  "cycle": int(table.cycle[s + n - 1]),
                  "rul": float(r), "rul_lower": None if lo is None else float(lo),
                  "rul_upper": None if hi is None else float(hi),
                  "health": HEALTH_CLASSES[int(np.argmax(p))],
                  "probabilities": dict(zip(HEALTH_CLASSES, map(float, p))), "warnings": w}
                 for u, r, p, w, s, n, lo, hi in zip(out.unit, out.rul, out.probabilities,
                                                     out.warnings, table.starts, table.lengths,
                                                     lower, upper)]
        return {"model_id": service.predictor.model_id, "predictions": preds}

    @app.post("/v1/assets/{asset_id}/failure", responses=ERRORS, dependencies=writes,
              tags=["accuracy"])
    async def post_failure(asset_id: AssetPath, body: FailureIn):
        """Record the cycle at which the asset failed (or was removed): the true RUL of its
        past predictions is then known, for `GET /v1/accuracy`. Its history is closed."""
        return await service.failure(asset_id, body.cycle)

    @app.get("/v1/accuracy", tags=["accuracy"])
    def get_accuracy():
        """RMSE, NASA score and interval coverage of the predictions of assets with a known
        failure: over every cycle, and at each asset's last cycle (the test protocol)."""
        return service.accuracy()

    @app.get("/v1/alerts", tags=["alerts"])
    def list_alerts(state: AlertFilter | None = None,
                    asset_id: Annotated[str | None, Query(pattern=ASSET_ID_PATTERN)] = None,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                    offset: Annotated[int, Query(ge=0)] = 0):
        """Alerts, newest first; ``state=open`` gives both active states."""
        total, rows = service.store.alerts(state=state, asset_id=asset_id, limit=limit,
                                           offset=offset)
        return {"total": total, "limit": limit, "offset": offset,
                "rules": [{**asdict(r), "description": r.describe()} for r in service.rules],
                "items": [alert_out(r) for r in rows]}

    @app.post("/v1/alerts/{alert_id}/ack", responses=ERRORS, dependencies=writes,
              tags=["alerts"])
    async def ack_alert(alert_id: int, body: AckIn | None = None):
        """Acknowledge an alert, with a note; a cleared alert may be acknowledged too."""
        return alert_out(await service.ack(alert_id, body.note if body else None))

    @app.get("/v1/drift", tags=["drift"])
    def get_drift():
        """PSI of the recent readings against the training distribution, per operating
        condition and model input, and the share of readings in no known condition."""
        if service.drift is None:
            raise ApiError(404, [], "this model has no drift reference (drift.json); run "
                           "`amnl calibrate` on it", "not_found")
        return service.drift.report()

    from amnl.serve import dashboard

    dashboard.register(app, service, asset_out, alert_out)

    @app.get("/healthz", tags=["operations"])
    async def healthz():
        """Alive."""
        return {"status": "ok"}

    @app.get("/readyz", responses={503: {"model": dict}}, tags=["operations"])
    def readyz():
        """Ready: the model is loaded and the database answers."""
        p = service.predictor
        try:
            service.store.ping()
        except Exception as exc:  # noqa: BLE001
            return JSONResponse({"status": "database unreachable", "error": str(exc)[:500]},
                                status_code=503)
        return {"status": "ready", "model_id": p.model_id, "runtime": p.inference.runtime,
                "precision": p.inference.precision, "max_batch": service.max_batch,
                "assets": len(service.writer.entries)}

    @app.get("/metrics", tags=["operations"])
    def metrics():
        """Prometheus metrics."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        service.refresh_gauges()
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


#: EngineTable column order from (unit, cycle, READING_COLUMNS...).
_TABLE_ORDER = [(["unit", "cycle", *READING_COLUMNS]).index(c) for c in COLUMNS]
