"""The dashboard at ``/``: server-rendered pages (Jinja2), charts drawn as SVG on the server,
one vendored script (acknowledging an alert) and one stylesheet; nothing from a CDN.

Pages: the fleet ranked by RUL lower bound (health colours, filter, search, drift and accuracy
panels, CSV), an asset (RUL trend with its interval band, health probabilities, the latest
readings the model reads, its alerts, CSV), the alerts (acknowledge with a note), the drift per
operating condition and input.
"""

from __future__ import annotations

import csv
import html
import io
from dataclasses import asdict
from pathlib import Path
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from amnl.features.labels import HEALTH_CLASSES
from amnl.serve.errors import ApiError
from amnl.serve.settings import MAX_CYCLE

HERE = Path(__file__).parent
#: Chart size (pixels) and margins.
WIDTH, HEIGHT, PAD = 1180, 260, 40
HEALTH_COLOURS = {"healthy": "#2e7d32", "degrading": "#ef8f00", "critical": "#c62828"}
#: Readings shown on an asset page.
INPUT_ROWS = 10


def _scale(values, lo, hi, a, b):
    span = (hi - lo) or 1.0
    return [a + (v - lo) / span * (b - a) for v in values]


def rul_chart(preds: list[dict], failure: int | None, cap: float) -> str:
    """SVG: predicted RUL per cycle (a polyline, one point per prediction), its interval as a
    band, the true RUL once the failure is known."""
    if not preds:
        return '<p class="muted">no predictions yet</p>'
    cycles = [p["cycle"] for p in preds]
    c0, c1 = min(cycles), max(max(cycles), failure or 0)
    xs = _scale(cycles, c0, c1, PAD, WIDTH - 10)

    def y(values):
        return _scale(values, 0, cap, HEIGHT - 25, 10)

    ys = y([p["rul"] for p in preds])
    parts = [(f'<svg id="rul-chart" viewBox="0 0 {WIDTH} {HEIGHT}" style="width:100%;height:auto" '
              'role="img" aria-label="RUL over cycles">')]
    for v in (0, 30, 80, cap):
        (yy,) = y([v])
        parts.append(f'<line x1="{PAD}" x2="{WIDTH - 10}" y1="{yy:.1f}" y2="{yy:.1f}" '
                     'stroke="#e4e7ec"/>'
                     f'<text x="4" y="{yy + 4:.1f}">{v:g}</text>')
    if preds[0].get("rul_lower") is not None:
        lo = y([p["rul_lower"] for p in preds])
        hi = y([p["rul_upper"] for p in preds])
        pts = [f"{x:.1f},{v:.1f}" for x, v in zip(xs, hi)] + \
              [f"{x:.1f},{v:.1f}" for x, v in zip(reversed(xs), reversed(lo))]
        parts.append(f'<polygon class="band" points="{" ".join(pts)}" fill="rgba(33,99,196,0.18)" '
                     'stroke="none"/>')
    if failure:
        true = y([min(failure - c, cap) for c in cycles])
        parts.append('<polyline class="truth" fill="none" stroke="#101828" stroke-dasharray="4 3" '
                     f'points="{" ".join(f"{x:.1f},{v:.1f}" for x, v in zip(xs, true))}"/>')
    parts.append('<polyline class="rul" fill="none" stroke="#2163c4" stroke-width="2" '
                 f'points="{" ".join(f"{x:.1f},{v:.1f}" for x, v in zip(xs, ys))}"/>')
    parts.append(f'<text x="{PAD}" y="{HEIGHT - 6}">cycle {c0}</text>'
                 f'<text x="{WIDTH - 80}" y="{HEIGHT - 6}">cycle {c1}</text></svg>')
    return "".join(parts)


def health_chart(preds: list[dict]) -> str:
    """SVG: the three health probabilities per cycle."""
    if not preds:
        return '<p class="muted">no predictions yet</p>'
    cycles = [p["cycle"] for p in preds]
    xs = _scale(cycles, min(cycles), max(cycles), PAD, WIDTH - 10)
    h = 140
    parts = [(f'<svg id="health-chart" viewBox="0 0 {WIDTH} {h}" style="width:100%;height:auto" '
              'role="img" aria-label="health probabilities">')]
    for name in HEALTH_CLASSES:
        ys = _scale([p[f"p_{name}"] for p in preds], 0, 1, h - 15, 8)
        parts.append(f'<polyline class="p-{name}" fill="none" stroke="{HEALTH_COLOURS[name]}" '
                     f'stroke-width="1.5" points="{" ".join(f"{x:.1f},{v:.1f}" for x, v in zip(xs, ys))}"/>')
    parts.append('<text x="4" y="14">1</text><text x="4" y="130">0</text></svg>')
    return "".join(parts)


def register(app: FastAPI, service, asset_out, alert_out) -> None:
    """Add the pages and the static files to ``app``."""
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    def common(page: str, title: str) -> dict:
        p = service.predictor
        demo = getattr(service, "demo", None)
        return {"page": page, "title": title, "model_id": p.model_id,
                "runtime": p.inference.runtime, "precision": p.inference.precision,
                "open_alerts": sum(service.store.open_alerts_by_severity().values()),
                "demo_cycle": demo.cycle if demo else None}

    def drift_summary() -> dict | None:
        if service.drift is None:
            return None
        report = service.drift.report()
        worst = [c["max_psi"] for c in report["conditions"] if c["max_psi"] is not None]
        return {**report, "worst": max(worst) if worst else None}

    def fleet_view(request: Request, limit: int = 50):
        q = request.query_params.get("q") or None
        health = request.query_params.get("health") or None
        if health not in (None, *HEALTH_CLASSES):
            health = None
        offset = request.query_params.get("offset") or "0"
        if not (offset.isascii() and offset.isdigit()) or int(offset) > MAX_CYCLE:  # not a 500
            raise ApiError(422, ["query", "offset"], f"offset must be an integer from 0 to "
                           f"{MAX_CYCLE}", "int_parsing")
        offset = int(offset)
        total, rows = service.store.fleet(health=health, limit=limit, offset=offset, search=q,
                                          by_lower_bound=True)
        return q, health, offset, total, [asset_out(r) for r in rows]

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def fleet_page(request: Request):
        q, health, offset, total, items = fleet_view(request)
        base = {k: v for k, v in (("q", q), ("health", health)) if v}
        return templates.TemplateResponse(request, "fleet.html", {
            **common("fleet", "Fleet"), "items": items, "total": total, "q": q,
            "health": health, "offset": offset, "limit": 50,
            "total_all": service.store.count("assets"), "drift": drift_summary(),
            "accuracy": service.accuracy(), "query": urlencode(base),
            "prev": urlencode({**base, "offset": max(offset - 50, 0)}),
            "next": urlencode({**base, "offset": offset + 50})})

    @app.get("/ui/fleet.csv", include_in_schema=False)
    def fleet_csv(request: Request):
        *_, items = fleet_view(request, limit=100_000)
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["asset_id", "cycle", "rul", "rul_lower", "rul_upper", "health",
                    *(f"p_{c}" for c in HEALTH_CLASSES), "pending", "failure_cycle"])
        for a in items:
            p = a["prediction"] or {}
            w.writerow([a["asset_id"], a["last_cycle"], p.get("rul", ""),
                        p.get("rul_lower", ""), p.get("rul_upper", ""), p.get("health", ""),
                        *((p.get("probabilities") or {}).get(c, "") for c in HEALTH_CLASSES),
                        a["pending"], a["failure_cycle"] or ""])
        return PlainTextResponse(buf.getvalue(), media_type="text/csv", headers={
            "Content-Disposition": 'attachment; filename="fleet.csv"'})

    @app.get("/ui/assets/{asset_id}", response_class=HTMLResponse, include_in_schema=False)
    def asset_page(request: Request, asset_id: str):
        row = service.store.asset(asset_id)
        if row is None:
            return HTMLResponse(f"<p>no asset {html.escape(asset_id[:64])}</p>", status_code=404)
        preds = service.store.predictions(asset_id)
        cap = service.predictor.config.data.rul_cap
        inputs = service.store.latest_readings(asset_id, INPUT_ROWS)
        columns = service.online.required
        _, alerts = service.store.alerts(asset_id=asset_id, limit=50)
        iv = service.predictor.intervals
        return templates.TemplateResponse(request, "asset.html", {
            **common("asset", asset_id), "asset": asset_out(row),
            "rul_chart": rul_chart(preds, row.get("failure_cycle"), cap),
            "health_chart": health_chart(preds), "inputs": inputs, "input_columns": columns,
            "alerts": [alert_out(a) for a in alerts], "coverage": iv.coverage if iv else None,
            "accuracy": service.accuracy(asset_id)["assets"].get(asset_id)})

    @app.get("/ui/alerts", response_class=HTMLResponse, include_in_schema=False)
    def alerts_page(request: Request):
        state = request.query_params.get("state", "open")
        _, rows = service.store.alerts(state=state or None, limit=500)
        return templates.TemplateResponse(request, "alerts.html", {
            **common("alerts", "Alerts"), "items": [alert_out(r) for r in rows],
            "state": state,
            "rules": [{**asdict(r), "description": r.describe()} for r in service.rules]})

    @app.get("/ui/drift", response_class=HTMLResponse, include_in_schema=False)
    def drift_page(request: Request):
        return templates.TemplateResponse(request, "drift.html", {
            **common("drift", "Drift"), "drift": drift_summary(),
            "features": service.drift.ref.features if service.drift else []})
