"""The dashboard at ``/``: server-rendered pages (Jinja2), charts drawn as SVG on the server,
one vendored script (acknowledging an alert) and one stylesheet; nothing from a CDN.

Pages: the fleet ranked by RUL lower bound (health colours, failed assets last, filter, search,
drift and accuracy panels, CSV), an asset (RUL trend with its interval band, health
probabilities, the latest readings the model reads, its alerts, CSV), the alerts (acknowledge
with a note), the drift per operating condition and input.

Readers are kept from starving ingestion (``docs/serving.md``: "The dashboard", and the figures
under "Dashboard readers and ingestion"): every page is read and rendered on one thread of its
own (:class:`RenderThread`), off the event loop that takes the readings, and that thread works
at most :data:`RENDER_SHARE` of the time (after a burst of :data:`RENDER_BURST`), so however
many readers there are, the dashboard takes at most about that share of one core. A page of
the fleet reads its rows from an index; the fleet's counts, open alerts, accuracy and drift (a
pass over the stored predictions) are recomputed at most every :data:`SUMMARY_SECONDS`.
"""

from __future__ import annotations

import asyncio
import csv
import html
import io
import logging
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape

from amnl.features.labels import HEALTH_CLASSES
from amnl.serve.db import PROBABILITY_COLUMNS as PROBABILITIES
from amnl.serve.errors import ApiError
from amnl.serve.alert_rules import STATES as ALERT_STATES
from amnl.serve.responses import warnings
from amnl.serve.schemas import ASSET_ID_PATTERN
from amnl.serve.settings import MAX_CYCLE

logger = logging.getLogger(__name__)

HERE = Path(__file__).parent
#: Chart size (pixels) and margins: both charts of an asset share the x axis.
WIDTH, HEIGHT, HEALTH_HEIGHT, PAD = 1180, 260, 150, 44
HEALTH_COLOURS = {"healthy": "#2e7d32", "degrading": "#ef8f00", "critical": "#c62828"}
#: Readings shown on an asset page.
INPUT_ROWS = 10
#: Assets on a page of the fleet.
PAGE = 50
#: Rows of the fleet CSV read and written at a time.
CSV_CHUNK = 2000
#: Fleet CSV downloads at a time: each holds a database connection and its snapshot until the
#: client has read it all (a client that stops reading would keep them), so more are a 503.
CSV_STREAMS = 2
#: The share of the time the dashboard's thread may work, and the work it may do at once after
#: a pause (seconds): in any T seconds it works at most RENDER_BURST + RENDER_SHARE * T plus
#: one job (the last may overdraw), so it never takes more than about a tenth of one core,
#: whatever the number of readers, while a page after a quiet spell is served at once (a page
#: of 50 assets renders in a few ms; the fleet CSV is read in chunks of CSV_CHUNK rows).
RENDER_SHARE, RENDER_BURST = 0.1, 0.5
#: Pages waiting for the dashboard's thread at most; more are answered 503 with Retry-After.
MAX_WAITING = 64
#: Age of the fleet summary (counts, open alerts, live accuracy, drift) at most, seconds.
SUMMARY_SECONDS = 5.0
#: The fleet filter's states: the health classes of live assets, and the failed ones.
FLEET_STATES = ("critical", "degrading", "healthy", "failed")


class RenderThread:
    """One thread for the dashboard's reads and renders, working at most ``share`` of the
    time over any long interval (a token bucket of ``burst`` seconds of work); pages wait
    their turn without using the CPU.

    Args:
        share: the share of the time it may work, in (0, 1].
        burst: the seconds of work it may do at once after a pause.
        max_waiting: pages waiting at most (then :meth:`run` raises a 503).
    """

    def __init__(self, share: float = RENDER_SHARE, burst: float = RENDER_BURST,
                 max_waiting: int = MAX_WAITING) -> None:
        self.share, self.burst, self.max_waiting = share, burst, max_waiting
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="amnl-dashboard")
        self._credit, self._at = burst, time.monotonic()  # seconds of work it may do now
        self.waiting = 0
        self.busy_seconds = 0.0

    async def run(self, fn, *args):
        """``fn(*args)`` on the thread; its result."""
        if self.waiting >= self.max_waiting:
            raise ApiError(503, [], "the dashboard is busy; retry in a few seconds", "busy",
                           retry_after=1)
        self.waiting += 1
        try:
            return await asyncio.wrap_future(self._pool.submit(self._paced, fn, *args))
        finally:
            self.waiting -= 1

    def later(self, fn, *args) -> None:
        """``fn(*args)`` on the thread in its turn, not waited for; an error is logged."""
        def logged():
            try:
                self._paced(fn, *args)
            except Exception:  # noqa: BLE001 - nobody waits for it: say so in the log
                logger.exception("the dashboard's background read %s failed", fn.__name__)

        self._pool.submit(logged)

    def _paced(self, fn, *args):
        now = time.monotonic()
        self._credit = min(self.burst, self._credit + (now - self._at) * self.share)
        self._at = now
        if self._credit < 0:  # the last jobs overdrew: wait until it is earned back
            time.sleep(-self._credit / self.share)
            self._credit, self._at = 0.0, time.monotonic()
        t0 = time.monotonic()
        try:
            return fn(*args)
        finally:
            spent = time.monotonic() - t0
            self.busy_seconds += spent
            self._credit -= spent

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class FleetSummary:
    """The fleet's counts by state, open alerts, live accuracy and drift, recomputed at most
    every ``max_age`` seconds, on the dashboard's thread after the page that found it old (so
    a page waits for it only the first time).

    Args:
        service: the :class:`~amnl.serve.service.FleetService` it reads.
        thread: the dashboard's :class:`RenderThread`.
        max_age: seconds.
    """

    def __init__(self, service, thread: RenderThread, max_age: float = SUMMARY_SECONDS) -> None:
        self.service, self.thread, self.max_age = service, thread, max_age
        self._value: dict | None = None
        self._at = 0.0
        self._due = False  # a refresh is queued

    def get(self) -> dict:
        """The summary (called on the dashboard's thread)."""
        if self._value is None:
            self._refresh()
        elif time.monotonic() - self._at > self.max_age and not self._due:
            self._due = True
            self.thread.later(self._refresh)
        return self._value

    def _refresh(self) -> None:
        s = self.service
        try:
            counts = s.fleet_counts()
            report = s.drift_report()
            if report is not None:
                worst = [c["max_psi"] for c in report["conditions"] if c["max_psi"] is not None]
                report = {**report, "worst": max(worst) if worst else None}
            self._value = {"counts": counts, "total": sum(counts.values()),
                           "open_alerts": sum(s.open_alerts().values()),
                           "accuracy": s.accuracy(), "drift": report,
                           "as_of": datetime.now(timezone.utc)}
            self._at = time.monotonic()
        finally:
            self._due = False


def _scale(values, lo, hi, a, b):
    span = (hi - lo) or 1.0
    return [a + (v - lo) / span * (b - a) for v in values]


def x_range(preds: list[dict], failure: int | None) -> tuple[int, int]:
    """The cycles both charts of an asset span: its predictions, and its failure once known."""
    cycles = [p["cycle"] for p in preds]
    return min(cycles), max(max(cycles), failure or 0)


def _x_axis(c0: int, c1: int, h: int) -> str:
    return (f'<text x="{PAD}" y="{h - 4}">cycle {c0}</text>'
            f'<text x="{WIDTH - 10}" y="{h - 4}" text-anchor="end">cycle {c1}</text>')


def _points(xs, ys) -> str:
    return " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys))


def rul_chart(preds: list[dict], failure: int | None, cap: float,
              thresholds: tuple[float, float], coverage: float | None = None) -> str:
    """SVG: predicted RUL per cycle (a polyline, one point per prediction), its interval as a
    band, the true RUL once the failure is known, the model's health thresholds as lines; a
    legend below."""
    if not preds:
        return '<p class="muted">no predictions yet</p>'
    c0, c1 = x_range(preds, failure)
    xs = _scale([p["cycle"] for p in preds], c0, c1, PAD, WIDTH - 10)

    def y(values):
        return _scale(values, 0, cap, HEIGHT - 25, 10)

    high, low = thresholds
    parts = [(f'<svg id="rul-chart" data-cycles="{c0} {c1}" viewBox="0 0 {WIDTH} {HEIGHT}" '
              'style="width:100%;height:auto" role="img" aria-label="RUL over cycles">')]
    for v, label in ((0, "0"), (low, f"{low:g}"), (high, f"{high:g}"), (cap, f"{cap:g}")):
        (yy,) = y([v])
        dash = ' stroke-dasharray="2 4"' if v in (low, high) else ""
        parts.append(f'<line class="grid" x1="{PAD}" x2="{WIDTH - 10}" y1="{yy:.1f}" '
                     f'y2="{yy:.1f}" stroke="#d0d5dd"{dash}/>'
                     f'<text x="4" y="{yy + 4:.1f}">{label}</text>')
    bounded = preds[0].get("rul_lower") is not None
    if bounded:
        lo = y([p["rul_lower"] for p in preds])
        hi = y([p["rul_upper"] for p in preds])
        parts.append(f'<polygon class="band" points="{_points(xs, hi)} '
                     f'{_points(xs[::-1], lo[::-1])}" fill="rgba(33,99,196,0.18)" stroke="none"/>')
    if failure:
        true = y([min(failure - p["cycle"], cap) for p in preds])
        parts.append('<polyline class="truth" fill="none" stroke="#101828" '
                     f'stroke-dasharray="4 3" points="{_points(xs, true)}"/>')
    parts.append('<polyline class="rul" fill="none" stroke="#2163c4" stroke-width="2" '
                 f'points="{_points(xs, y([p["rul"] for p in preds]))}"/>')
    parts.append(_x_axis(c0, c1, HEIGHT) + "</svg>")
    legend = ['<span><i class="key line" style="border-color:#2163c4"></i>predicted RUL '
              '(cycles)</span>']
    if bounded:
        share = f" (nominal {100 * coverage:.0f} %)" if coverage else ""
        legend.append(f'<span><i class="key band"></i>interval{share}</span>')
    if failure:
        legend.append('<span><i class="key line dashed" style="border-color:#101828"></i>true '
                      f'RUL (failure at cycle {failure})</span>')
    legend.append(f'<span><i class="key line dotted"></i>health thresholds: degrading below '
                  f'{high:g}, critical at or below {low:g} cycles</span>')
    parts.append(f'<div class="legend" id="rul-legend">{"".join(legend)}</div>')
    return "".join(parts)


def health_chart(preds: list[dict], failure: int | None) -> str:
    """SVG: the three health probabilities per cycle, on the RUL chart's x axis; a legend."""
    if not preds:
        return '<p class="muted">no predictions yet</p>'
    c0, c1 = x_range(preds, failure)
    xs = _scale([p["cycle"] for p in preds], c0, c1, PAD, WIDTH - 10)
    h = HEALTH_HEIGHT
    parts = [(f'<svg id="health-chart" data-cycles="{c0} {c1}" viewBox="0 0 {WIDTH} {h}" '
              'style="width:100%;height:auto" role="img" aria-label="health probabilities">')]
    for v in (0, 1):
        (yy,) = _scale([v], 0, 1, h - 25, 10)
        parts.append(f'<line class="grid" x1="{PAD}" x2="{WIDTH - 10}" y1="{yy:.1f}" '
                     f'y2="{yy:.1f}" stroke="#d0d5dd"/><text x="4" y="{yy + 4:.1f}">{v}</text>')
    for name in HEALTH_CLASSES:
        ys = _scale([p[f"p_{name}"] for p in preds], 0, 1, h - 25, 10)
        parts.append(f'<polyline class="p-{name}" fill="none" stroke="{HEALTH_COLOURS[name]}" '
                     f'stroke-width="1.5" points="{_points(xs, ys)}"/>')
    parts.append(_x_axis(c0, c1, h) + "</svg>")
    parts.append('<div class="legend" id="health-legend">' + "".join(
        f'<span><i class="key line" style="border-color:{HEALTH_COLOURS[n]}"></i>P({n})</span>'
        for n in HEALTH_CLASSES) + "</div>")
    return "".join(parts)


def utc(value) -> str:
    """An ISO time (the API's), a datetime or UNIX seconds as ``YYYY-MM-DD HH:MM:SS UTC``."""
    if value is None:
        return ""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    t = value if isinstance(value, datetime) else datetime.fromtimestamp(value, timezone.utc)
    return t.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def fixed(value, digits: int = 1) -> str:
    """``value`` with ``digits`` decimals; a value that rounds to zero has no minus sign."""
    if value is None:
        return "–"
    s = f"{value:.{digits}f}"
    return s[1:] if s.startswith("-") and float(s) == 0 else s


def short(value) -> str:
    """``value`` in at most 4 significant digits (``%g``), never ``-0``."""
    s = f"{value:.4g}"
    return s[1:] if s.startswith("-") and float(s) == 0 else s


def _offset(request: Request) -> int:
    offset = request.query_params.get("offset") or "0"
    if not (offset.isascii() and offset.isdigit()) or int(offset) > MAX_CYCLE:  # not a 500
        raise ApiError(422, ["query", "offset"], f"offset must be an integer from 0 to "
                       f"{MAX_CYCLE}", "int_parsing")
    return int(offset)


def _fleet_query(request: Request) -> tuple[str | None, str | None, int]:
    """(search, state, offset) of a fleet page's query; an unknown state is ignored."""
    # no asset id holds a NUL, and PostgreSQL refuses one in text (a 500): dropped
    q = (request.query_params.get("q") or "").replace("\x00", "")[:64] or None
    state = request.query_params.get("health") or None
    return q, state if state in FLEET_STATES else None, _offset(request)


def register(app: FastAPI, service, asset_out, alert_out) -> None:
    """Add the pages and the static files to ``app``."""
    env = Environment(loader=FileSystemLoader(str(HERE / "templates")),
                      autoescape=select_autoescape(["html"]))
    env.filters.update(utc=utc, fixed=fixed, short=short)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    thread = RenderThread()
    streams = {"open": 0}  # fleet CSV downloads under way
    summary = FleetSummary(service, thread)

    def page(name: str, status: int = 200, **context) -> HTMLResponse:
        """Render on the dashboard's thread (its callers run there)."""
        p = service.predictor
        demo = getattr(service, "demo", None)
        s = summary.get()
        context = {"model_id": p.model_id, "runtime": p.inference.runtime,
                   "precision": p.inference.precision, "open_alerts": s["open_alerts"],
                   "demo_cycle": demo.cycle if demo else None, "summary": s, **context}
        return HTMLResponse(env.get_template(name).render(context), status_code=status)

    def live(row: dict) -> dict:
        a = asset_out(row)
        a["warnings"] = (a["prediction"] or {}).get("warnings") or []
        return a

    def fleet_page(q, state, offset) -> HTMLResponse:
        s = summary.get()
        total, rows = service.fleet(health=state, limit=PAGE, offset=offset, search=q,
                                    by_lower_bound=True, count=q is not None)
        if total is None:  # counts of the summary (at most SUMMARY_SECONDS old)
            total = s["counts"].get(state, 0) if state else s["total"]
        base = {k: v for k, v in (("q", q), ("health", state)) if v}
        return page("fleet.html", page="fleet", title="Fleet", items=[live(r) for r in rows],
                    total=total, q=q, health=state, states=FLEET_STATES, offset=offset,
                    limit=PAGE, query=urlencode(base),
                    prev=urlencode({**base, "offset": max(offset - PAGE, 0)}),
                    next=urlencode({**base, "offset": offset + PAGE}))

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def fleet(request: Request):
        return await thread.run(fleet_page, *_fleet_query(request))

    def csv_rows(rows: list[dict]) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        for r in rows:
            predicted = r["predicted_cycle"] is not None
            w.writerow([r["asset_id"], r["last_cycle"],
                        *((r[k] if predicted and r[k] is not None else "")
                          for k in ("rul", "rul_lower", "rul_upper", "health", *PROBABILITIES)),
                        r["pending"],  # the service's count (FleetService.with_pending)
                        r["failure_cycle"] or "", "; ".join(warnings(r))])
        return buf.getvalue()

    @app.get("/ui/fleet.csv", include_in_schema=False)
    async def fleet_csv(request: Request):
        q, state, offset = _fleet_query(request)
        if streams["open"] >= CSV_STREAMS:
            raise ApiError(503, [], f"{CSV_STREAMS} fleet downloads are under way; try again "
                           "when one has finished", "busy")
        chunks = service.fleet_chunks(health=state, search=q, offset=offset, chunk=CSV_CHUNK)

        def next_chunk() -> str | None:
            rows = next(chunks, None)
            return None if rows is None else csv_rows(rows)

        async def body():
            streams["open"] += 1  # counted while it runs (on the event loop's thread only)
            try:
                yield ",".join(["asset_id", "cycle", "rul", "rul_lower", "rul_upper", "health",
                                *PROBABILITIES, "pending", "failure_cycle", "warnings"]) + "\n"
                while (text := await thread.run(next_chunk)) is not None:
                    yield text
            finally:  # also when the client goes away: the query ends on its own thread
                streams["open"] -= 1
                thread.later(chunks.close)

        return StreamingResponse(body(), media_type="text/csv", headers={
            "Content-Disposition": 'attachment; filename="fleet.csv"'})

    def asset_page(asset_id: str) -> HTMLResponse:
        row = service.asset(asset_id) if re.fullmatch(ASSET_ID_PATTERN, asset_id) else None
        if row is None:
            return HTMLResponse(f"<p>no asset {html.escape(asset_id[:64])}</p>", status_code=404)
        preds = service.predictions(asset_id)
        cfg = service.predictor.config.data
        iv = service.predictor.intervals
        coverage = iv.coverage if iv else None
        failure = row.get("failure_cycle")
        columns = service.required_columns
        inputs = service.latest_readings(asset_id, INPUT_ROWS)[::-1]  # oldest first
        _, alerts = service.alerts(asset_id=asset_id, limit=50)
        return page("asset.html", page="asset", title=asset_id, asset=live(row),
                    rul_chart=rul_chart(preds, failure, cfg.rul_cap, cfg.health_thresholds,
                                        coverage),
                    health_chart=health_chart(preds, failure), inputs=inputs,
                    input_columns=columns, alerts=[alert_out(a) for a in alerts],
                    coverage=coverage, thresholds=cfg.health_thresholds,
                    accuracy=service.accuracy(asset_id)["assets"].get(asset_id))

    @app.get("/ui/assets/{asset_id}", response_class=HTMLResponse, include_in_schema=False)
    async def asset(asset_id: str):
        return await thread.run(asset_page, asset_id)

    def alerts_page(state: str) -> HTMLResponse:
        _, rows = service.alerts(state=state or None, limit=500)
        items = [alert_out(r) for r in rows]
        return page("alerts.html", page="alerts", title="Alerts", items=items, state=state,
                    failed=service.failures(a["asset_id"] for a in items),
                    token_needed=service.writes_need_token,
                    rules=[{**asdict(r), "description": r.describe()} for r in service.rules])

    @app.get("/ui/alerts", response_class=HTMLResponse, include_in_schema=False)
    async def alerts(request: Request):
        state = request.query_params.get("state", "open")
        # "" shows every alert; an unknown filter is ignored (open alerts)
        return await thread.run(alerts_page, state if state in ("", "open", *ALERT_STATES)
                                else "open")

    def drift_page() -> HTMLResponse:
        return page("drift.html", page="drift", title="Drift", drift=summary.get()["drift"],
                    features=service.drift_features)

    @app.get("/ui/drift", response_class=HTMLResponse, include_in_schema=False)
    async def drift():
        return await thread.run(drift_page)

    app.state.dashboard = thread
