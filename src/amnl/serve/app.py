"""The HTTP front door of :class:`~amnl.serve.service.FleetService` (FastAPI).

``create_app(settings)`` returns the app; ``amnl serve`` runs it with uvicorn. OpenAPI at
``/docs`` (and ``/openapi.json``). Every error is a 4xx/5xx with
:class:`~amnl.serve.schemas.ErrorOut`'s body.
"""


import asyncio
import hmac
import logging
import time
from contextlib import asynccontextmanager
from dataclasses import asdict
from typing import Annotated, Literal

import numpy as np
from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from amnl import __version__
from amnl.data.cmapss import COLUMNS, EngineTable
from amnl.errors import DataError
from amnl.features.online import READING_COLUMNS, OnlineFeatures
from amnl.serve.errors import ApiError
from amnl.serve.responses import (
    alert_out,
    asset_out,
    ingest_out,
    prediction_out,
    predictions_csv,
    stateless_out,
)
from amnl.serve.schemas import (
    ASSET_ID_PATTERN,
    COMMON_ERRORS,
    WRITE_ERRORS,
    MAX_ID,
    AckIn,
    AssetOut,
    FailureIn,
    FleetOut,
    IngestOut,
    PredictOut,
    errors,
    request_models,
)
from amnl.serve.service import FleetService, load_predictor, serving_threads
from amnl.serve.settings import MAX_CYCLE, ServeSettings

#: ``open`` (both active states) or one state.
AlertFilter = Literal["open", "active_unacknowledged", "active_acknowledged",
                      "cleared_unacknowledged", "cleared_acknowledged"]
AssetPath = Annotated[str, Path(pattern=ASSET_ID_PATTERN, description="The asset's id.")]
logger = logging.getLogger(__name__)
#: The Prometheus text format every Prometheus reads (what ``generate_latest`` writes).
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Sent with every response: scripts, styles, images and fetches from this server only (the
#: dashboard's and Swagger UI's are vendored under /static), no framing, no MIME sniffing, no
#: referrer. Styles may be inline (the charts' SVG carries style attributes).
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
       "frame-ancestors 'none'; form-action 'self'")
SECURITY_HEADERS = [(b"content-security-policy", CSP.encode()),
                    (b"x-frame-options", b"DENY"), (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer")]
#: Every integer a request carries is bounded (a 422 beyond, never an overflow in the database).
Offset = Annotated[int, Query(ge=0, le=MAX_CYCLE, description="Items to skip.")]


class _Limits:
    """Pure ASGI middleware: the Host header checked (a 400 for another host: no DNS
    rebinding), the request body read whole before the app sees it, at most ``max_body`` bytes
    (a 413, with or without a Content-Length), the security headers on every response, and the
    latency metric by route."""

    def __init__(self, app, service: FleetService, max_body: int,
                 hosts: frozenset[str] | None, body_timeout: float) -> None:
        self.app, self.service, self.max_body, self.hosts = app, service, max_body, hosts
        self.body_timeout = body_timeout

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status: dict = {"code": 500}

        async def sending(message):
            if message["type"] == "http.response.start":
                status["code"], status["started"] = message["status"], True
                have = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []),
                                      *((k, v) for k, v in SECURITY_HEADERS if k not in have)]
            await send(message)

        try:
            headers = dict(scope["headers"])
            self._check_host(headers)
            body = await self._body(headers, receive)
        except ApiError as exc:
            await _error(sending, exc, {"Connection": "close"} if exc.status == 408 else None)
        else:
            if body is not None:
                try:
                    await self.app(scope, _replay(body, receive), sending)
                except Exception as exc:  # noqa: BLE001 - a bug: logged, answered, survived
                    logger.exception("%s %s failed", scope["method"], scope["path"])
                    if status["code"] == 500 and not status.get("started"):
                        await _error(sending, ApiError(
                            500, [], f"internal error ({type(exc).__name__}); the server's log "
                            "has the details", "internal"))
        route = scope.get("route")
        self.service.metrics.request_seconds.labels(
            scope["method"], getattr(route, "path", "unmatched"), str(status["code"])
        ).observe(time.perf_counter() - t0)

    def _check_host(self, headers: dict) -> None:
        if self.hosts is None:
            return
        host = headers.get(b"host")
        if host is None:  # HTTP/1.0 without one: no browser, no rebinding
            return
        name = host.decode("latin-1").lower()
        name = name[:name.index("]") + 1] if name.startswith("[") and "]" in name else (
            name.rsplit(":", 1)[0])
        if name not in self.hosts:
            raise ApiError(400, ["header", "host"], f"this server does not answer for host "
                           f"{name[:100]!r}; it answers {', '.join(sorted(self.hosts))} (add "
                           "one with --allowed-host)", "host_not_allowed")

    async def _body(self, headers: dict, receive) -> bytes | None:
        """The whole body (None: the client left); an ApiError past the limit (413) or the
        body timeout (408)."""
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            raise _too_large(self.max_body)
        chunks, seen, more = [], 0, True
        deadline = time.monotonic() + self.body_timeout
        while more:
            try:
                message = await asyncio.wait_for(receive(), deadline - time.monotonic())
            except asyncio.TimeoutError:
                raise ApiError(408, ["body"], f"the request body did not arrive within "
                               f"{self.body_timeout:g} s", "timeout") from None
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.max_body:  # a chunked body has no Content-Length to refuse first
                raise _too_large(self.max_body)
            chunks.append(chunk)
            more = message.get("more_body", False)
        return b"".join(chunks)


def server_config(app: FastAPI, settings: ServeSettings, **kw):
    """uvicorn's configuration of ``app`` with the service's timeouts and limits (``kw``:
    other uvicorn options, e.g. ``log_level``).

    uvicorn closes an idle kept-alive connection (``keep_alive_s``), answers 503 beyond
    ``limit_concurrency`` connections and a 400 beyond ``max_header_bytes`` of headers, but
    waits for ever for a request's headers: :func:`timed_h11` adds that timeout, and
    :class:`_Limits` the body's. What a process cannot bound is how many connections the
    kernel hands it (each an open file): in front of a network, put a reverse proxy with a
    ``maxconn`` (docs/serving.md, deploy/haproxy.cfg).
    """
    import uvicorn

    return uvicorn.Config(app, host=settings.host, port=settings.port,
                          http=timed_h11(settings.header_timeout_s),
                          timeout_keep_alive=settings.keep_alive_s,
                          limit_concurrency=settings.limit_concurrency,
                          h11_max_incomplete_event_size=settings.max_header_bytes,
                          access_log=False, **kw)


def timed_h11(header_timeout: float) -> type:
    """uvicorn's h11 protocol with a deadline on each request's line and headers: a
    connection that has not sent them whole ``header_timeout`` seconds after its first byte (or
    after it opened) is closed, so trickled headers cannot hold connections open (slowloris).
    """
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class TimedH11Protocol(H11Protocol):
        _headers_due: asyncio.TimerHandle | None = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            if self._headers_due is None and self.conn.their_state is h11.IDLE:
                self._arm()  # the first bytes of the next request on a kept-alive connection
            super().data_received(data)
            if self._headers_due is not None and self.conn.their_state is not h11.IDLE:
                self._headers_due.cancel()  # the request line and headers are in
                self._headers_due = None

        def connection_lost(self, exc) -> None:
            if self._headers_due is not None:
                self._headers_due.cancel()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._headers_due = self.loop.call_later(header_timeout, self._late)

        def _late(self) -> None:
            self._headers_due = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                logger.debug("closing %s: no request headers within %g s", self.client,
                             header_timeout)
                self.transport.close()

    return TimedH11Protocol


def _replay(body: bytes, receive):
    """An ASGI ``receive`` that gives ``body`` once, then waits on the client's."""
    sent = False

    async def replayed():
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed


def _too_large(limit: int) -> ApiError:
    return ApiError(413, ["body"], f"request body is larger than {limit} bytes", "too_large")


async def _error(send, exc: ApiError, headers: dict | None = None) -> None:
    """Send ``exc`` as the response (from middleware, outside the app's handlers)."""
    response = JSONResponse(exc.body(), status_code=exc.status, headers=headers)
    await response({"type": "http"}, None, send)


def create_app(settings: ServeSettings, predictor=None) -> FastAPI:
    """The FastAPI app of a :class:`FleetService` (started and stopped by its lifespan).

    The model is loaded here when ``predictor`` is None: the request bodies of the OpenAPI
    document name its inputs as required.
    """
    if predictor is None:
        predictor = load_predictor(settings.model, serving_threads(settings.inference))
    service = FleetService(settings, predictor)
    bodies = request_models(OnlineFeatures(predictor.preprocessor).required)
    AssetReadingsIn, FleetReadingsIn, PredictIn = (  # noqa: N806 - classes
        bodies.AssetReadingsIn, bodies.FleetReadingsIn, bodies.PredictIn)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        await run_in_threadpool(service.start)
        try:
            yield
        finally:
            await run_in_threadpool(service.stop)
            _app.state.dashboard.close()  # the dashboard's render thread

    app = FastAPI(title="amnl serve", version=__version__, lifespan=lifespan,
                  description="Remaining useful life and health state of every asset of a "
                              "fleet, updated with each reading. Writes need `Authorization: "
                              "Bearer <token>` when the server has a token. Every error has "
                              "the body `{\"detail\": [{\"loc\", \"msg\", \"type\"}]}`.",
                  responses=COMMON_ERRORS, docs_url=None, redoc_url=None)
    app.state.service = service
    app.add_middleware(_Limits, service=service, max_body=settings.max_body_bytes,
                       hosts=settings.host_allowed(), body_timeout=settings.body_timeout_s)
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

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        """Routing's errors (an unknown path, a method the path has not) in the same shape."""
        if exc.status_code == 405:
            allow = _allowed_methods(app, request.scope)
            headers = {"Allow": ", ".join(allow)}
            if request.method == "OPTIONS":
                return Response(status_code=204, headers=headers)
            return JSONResponse(ApiError(405, ["method"], f"{request.method} is not allowed on "
                                         f"this path; it takes {', '.join(allow)}",
                                         "method_not_allowed").body(), 405, headers)
        kind = "not_found" if exc.status_code == 404 else "http_error"
        where = ["path"] if exc.status_code == 404 else []
        return JSONResponse(ApiError(exc.status_code, where, str(exc.detail), kind).body(),
                            exc.status_code, exc.headers)

    @app.post("/v1/assets/{asset_id}/readings", response_model=IngestOut,
              responses={**WRITE_ERRORS, **errors(409)},
              dependencies=writes, tags=["readings"])
    async def post_asset_readings(asset_id: AssetPath, body: AssetReadingsIn):
        """Store one or more consecutive cycles of one asset, atomically; answers once they
        are durable. A re-sent cycle with the same values is a no-op; with other values a 409;
        a gap or an out-of-order cycle a 422 naming the expected cycle."""
        parts = service.validate([r.__dict__ for r in body.readings], ["body", "readings"],
                                 asset_id)
        return ingest_out(await service.ingest(parts))

    @app.post("/v1/readings", response_model=IngestOut,
              responses={**WRITE_ERRORS, **errors(409)},
              dependencies=writes, tags=["readings"])
    async def post_fleet_readings(body: FleetReadingsIn):
        """Store readings of many assets (a gateway posting one cycle of the whole fleet),
        atomically: one refused reading refuses the request, and nothing of it is stored."""
        parts = service.validate([r.__dict__ for r in body.readings], ["body", "readings"])
        return ingest_out(await service.ingest(parts))

    @app.get("/v1/assets", response_model=FleetOut, tags=["assets"])
    def list_assets(health: Literal["healthy", "degrading", "critical"] | None = None,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                    offset: Offset = 0):
        """The fleet, most urgent first (lowest predicted RUL; unpredicted assets last)."""
        total, rows = service.fleet(health=health, limit=limit, offset=offset)
        return {"total": total, "limit": limit, "offset": offset,
                "items": [asset_out(r) for r in rows]}

    def found(asset_id: str) -> dict:
        row = service.asset(asset_id)
        if row is None:
            raise ApiError(404, ["path", "asset_id"], f"no asset {asset_id}", "not_found")
        return row

    @app.get("/v1/assets/{asset_id}", response_model=AssetOut, responses=errors(404),
             tags=["assets"])
    def get_asset(asset_id: AssetPath):
        """The asset's latest prediction (RUL, health, probabilities, cycle, model, time)."""
        return asset_out(found(asset_id))

    @app.get("/v1/assets/{asset_id}/predictions", responses={
        **errors(404), 200: {"content": {"application/json": {}, "text/csv": {}},
                        "description": "The predictions, oldest first."}}, tags=["assets"])
    def get_predictions(asset_id: AssetPath, format: Literal["json", "csv"] = "json",
                        from_cycle: Annotated[int | None, Query(ge=0, le=MAX_CYCLE)] = None,
                        to_cycle: Annotated[int | None, Query(ge=0, le=MAX_CYCLE)] = None,
                        limit: Annotated[int | None, Query(ge=1, le=MAX_CYCLE)] = None):
        """Every prediction of the asset (one per cycle), as JSON or CSV."""
        found(asset_id)
        rows = service.predictions(asset_id, from_cycle=from_cycle, to_cycle=to_cycle,
                                   limit=limit)
        if format == "csv":
            return PlainTextResponse(predictions_csv(rows), media_type="text/csv", headers={
                "Content-Disposition": f'attachment; filename="{asset_id}-predictions.csv"'})
        return JSONResponse({"asset_id": asset_id,
                             "predictions": [prediction_out(r) for r in rows]})

    @app.delete("/v1/assets/{asset_id}", status_code=204,
                responses={**WRITE_ERRORS, **errors(404)},
                dependencies=writes, tags=["assets"])
    async def delete_asset(asset_id: AssetPath):
        """Forget the asset: its readings, predictions and state."""
        if not await service.delete(asset_id):
            raise ApiError(404, ["path", "asset_id"], f"no asset {asset_id}", "not_found")
        return Response(status_code=204)

    @app.post("/v1/predict", response_model=PredictOut, responses=WRITE_ERRORS,
              dependencies=writes, tags=["predict"])
    def predict(body: PredictIn):
        """Stateless: each asset's history in, its prediction at the last cycle out (as `amnl
        predict` gives), with warnings where the input lies outside the training range."""
        values, ids = [], []
        for k, h in enumerate(body.assets):
            for part in service.validate([r.__dict__ for r in h.readings],
                                         ["body", "assets", k, "readings"], h.asset_id):
                values.append(np.column_stack([np.full(len(part.cycles), k + 1),
                                               part.cycles, part.raw]))
            ids.append(h.asset_id)
        table = EngineTable("request", np.concatenate(values)[:, _TABLE_ORDER])
        try:
            out = service.predictor.predict_table(table)
        except DataError as exc:
            raise ApiError(422, ["body", "assets"], str(exc), "value_error") from None
        preds = stateless_out(out, table, ids)
        return {"model_id": service.predictor.model_id, "predictions": preds}

    @app.post("/v1/assets/{asset_id}/failure", responses={**WRITE_ERRORS, **errors(404, 409)},
              dependencies=writes,
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
                    offset: Offset = 0):
        """Alerts, newest first; ``state=open`` gives both active states."""
        total, rows = service.alerts(state=state, asset_id=asset_id, limit=limit,
                                     offset=offset)
        return {"total": total, "limit": limit, "offset": offset,
                "rules": [{**asdict(r), "description": r.describe()} for r in service.rules],
                "items": [alert_out(r) for r in rows]}

    @app.post("/v1/alerts/{alert_id}/ack", responses={**WRITE_ERRORS, **errors(404)},
              dependencies=writes,
              tags=["alerts"])
    async def ack_alert(alert_id: Annotated[int, Path(ge=1, le=MAX_ID)],
                        body: AckIn | None = None):
        """Acknowledge an alert, with a note; a cleared alert may be acknowledged too."""
        return alert_out(await service.ack(alert_id, body.note if body else None))

    @app.get("/v1/drift", responses=errors(404), tags=["drift"])
    def get_drift():
        """PSI of the recent readings against the training distribution, per operating
        condition and model input, and the share of readings in no known condition."""
        report = service.drift_report()
        if report is None:
            raise ApiError(404, [], "this model has no drift reference (drift.json); run "
                           "`amnl calibrate` on it", "not_found")
        return report

    from amnl.serve import dashboard

    dashboard.register(app, service, asset_out, alert_out)

    @app.get("/docs", response_class=HTMLResponse, include_in_schema=False)
    def docs():
        """Swagger UI from the vendored files under /static (no CDN: plants are often
        air-gapped)."""
        return HTMLResponse(_DOCS_PAGE)

    @app.get("/healthz", tags=["operations"])
    async def healthz():
        """Alive."""
        return {"status": "ok"}

    @app.get("/readyz", responses={503: {"model": dict}}, tags=["operations"])
    def readyz():
        """Ready: the model is loaded, the database answers and the service's threads run."""
        p = service.predictor
        dead = service.dead_threads()
        if dead:
            return JSONResponse({"status": "thread died", "threads": dead,
                                 "error": f"the {', '.join(dead)} thread died (see the log); "
                                          "restart the service"}, status_code=503)
        try:
            service.ping()
        except Exception as exc:  # noqa: BLE001
            return JSONResponse({"status": "database unreachable", "error": str(exc)[:500]},
                                status_code=503)
        return {"status": "ready", "model_id": p.model_id, "runtime": p.inference.runtime,
                "precision": p.inference.precision, "max_batch": service.max_batch,
                "assets": service.asset_count()}

    @app.get("/metrics", response_class=Response, tags=["operations"], responses={
        200: {"description": "Prometheus's text format.",
              "content": {METRICS_TYPE: {"schema": {"type": "string"}}}}})
    def metrics():
        """Prometheus metrics."""
        from prometheus_client import generate_latest

        service.refresh_gauges()
        return Response(generate_latest(service.metrics.registry), media_type=METRICS_TYPE)

    return app


def _allowed_methods(app: FastAPI, scope) -> list[str]:
    """Every method some route takes on the scope's path (a path such as
    ``/v1/assets/{asset_id}`` has one route per method), OPTIONS included."""
    methods = {"OPTIONS"}
    for route in app.router.routes:
        if getattr(route, "methods", None) and route.matches(
                {**scope, "method": next(iter(route.methods))})[0] == Match.FULL:
            methods |= route.methods
    return sorted(methods)


_DOCS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>amnl serve - API</title>
<link rel="icon" href="data:,"><link rel="stylesheet" href="/static/swagger-ui.css"></head>
<body data-openapi="/openapi.json"><div id="swagger-ui"></div>
<script src="/static/swagger-ui-bundle.js"></script><script src="/static/swagger-init.js"></script>
</body></html>"""

#: EngineTable column order from (unit, cycle, READING_COLUMNS...).
_TABLE_ORDER = [(["unit", "cycle", *READING_COLUMNS]).index(c) for c in COLUMNS]
