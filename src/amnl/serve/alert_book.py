"""The writer's alert bookkeeping: predictions in, alert rows and webhook events out, in the
transaction of the predictions (see :mod:`amnl.serve.alert_rules` for the rules and states).

Each asset's predictions are evaluated in cycle order: a prediction that arrives before the
one of the previous cycle (after a catch-up) waits in a buffer until the gap is filled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from sqlalchemy import case, select, update

from amnl.serve.alert_rules import OPEN_STATES, AlertRule, AssetAlerts, Transition, evaluate
from amnl.serve.db import alert_events, alerts, assets, webhook_deliveries
from amnl.serve.errors import ApiError


def iso(t: float) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(t, timezone.utc).isoformat()


@dataclass
class Staged:
    """What a transaction changed, applied to memory once it commits."""

    states: dict[str, AssetAlerts]
    buffers: dict[str, dict[int, dict]]
    events: int


class AlertBook:
    """Alert state of every asset (committed), and the SQL of its changes.

    Args:
        store: the service's :class:`amnl.serve.store.Store`.
        rules: the fleet's rules.
        webhook_urls: every event gets one delivery row per URL.
        model_id: named in the events.
        states: each asset's hysteresis state, as stored (``assets.alert_state``).
    """

    def __init__(self, store, rules: tuple[AlertRule, ...], webhook_urls: list[str],
                 model_id: str, states: dict[str, AssetAlerts]) -> None:
        self.store = store
        self.rules, self.urls, self.model_id = rules, list(webhook_urls), model_id
        self.by_name = {r.name: r for r in rules}
        self.states = states
        self.buffers: dict[str, dict[int, dict]] = {}

    def stage(self, conn, rows: list[dict], first_cycles: dict[str, int], stamp: float) -> Staged:
        """Evaluate new prediction rows; write alert changes and events into ``conn``."""
        by_asset: dict[str, dict[int, dict]] = {}
        for r in rows:
            by_asset.setdefault(r["asset_id"], {})[int(r["cycle"])] = r
        states, buffers, events, updates = {}, {}, 0, []
        for a, new in by_asset.items():
            have = self.states.get(a)
            if have is None:  # not in memory (evicted with its entry): as stored
                stored = conn.execute(select(assets.c.alert_state)
                                      .where(assets.c.asset_id == a)).scalar()
                have = AssetAlerts.from_json(stored) if stored else None
            state = have.copy() if have is not None else AssetAlerts(first_cycles[a] - 1)
            # a repeated prediction (at or below the evaluated cycle) is not kept
            buf = {c: r for c, r in {**self.buffers.get(a, {}), **new}.items()
                   if c > state.cycle}
            while state.cycle + 1 in buf:
                prediction = buf.pop(state.cycle + 1)
                for t in evaluate(self.rules, state, a, prediction):
                    self._transition(conn, state, t, stamp, prediction.get("warnings"))
                    events += 1
            states[a], buffers[a] = state, buf
            updates.append((state.to_json(), a))
        self.store.update_alert_states(conn, updates)
        return Staged(states, buffers, events)

    def apply(self, staged: Staged) -> None:
        self.states.update(staged.states)
        for a, buf in staged.buffers.items():
            if buf:
                self.buffers[a] = buf
            else:
                self.buffers.pop(a, None)

    def evict(self, asset_id: str) -> None:
        """Drop an asset's state from memory (its row keeps it); not while it has a buffer."""
        if asset_id not in self.buffers:
            self.states.pop(asset_id, None)

    def forget(self, asset_id: str) -> None:
        self.states.pop(asset_id, None)
        self.buffers.pop(asset_id, None)

    def _transition(self, conn, state: AssetAlerts, t: Transition, stamp: float,
                    warnings: str | None = None) -> None:
        """Write ``t``; a raised alert keeps the input warnings (JSON) of the prediction that
        raised it: raised all the same, but marked (see docs/serving.md)."""
        streak = state.streaks[t.rule.name]
        if t.kind == "raised":
            alert_id = conn.execute(alerts.insert().values(
                asset_id=t.asset_id, rule=t.rule.name, severity=t.rule.severity,
                state="active_unacknowledged", message=t.rule.describe(), raised_at=stamp,
                raised_cycle=t.cycle, raised_value=t.value,
                warnings=warnings)).inserted_primary_key[0]
            streak.open_id = t.alert_id = int(alert_id)
        else:  # cleared
            conn.execute(update(alerts).where(alerts.c.id == t.alert_id).values(
                state=case((alerts.c.state == "active_acknowledged", "cleared_acknowledged"),
                           else_="cleared_unacknowledged"),
                cleared_at=stamp, cleared_cycle=t.cycle, cleared_value=t.value))
        self.event(conn, t.alert_id, t.kind, stamp)

    def event(self, conn, alert_id: int, kind: str, stamp: float) -> None:
        """Store an event (its webhook body) and one delivery per URL."""
        row = conn.execute(select(alerts).where(alerts.c.id == alert_id)).mappings().one()
        body = json.dumps({"event": kind, "alert_id": alert_id, "asset_id": row["asset_id"],
                           "rule": row["rule"], "severity": row["severity"],
                           "state": row["state"], "message": row["message"],
                           "cycle": {"raised": row["raised_cycle"],
                                     "cleared": row["cleared_cycle"],
                                     "acknowledged": row["acknowledged_cycle"]}[kind],
                           "value": {"raised": row["raised_value"],
                                     "cleared": row["cleared_value"]}.get(kind),
                           "note": row["ack_note"] if kind == "acknowledged" else None,
                           "at": iso(stamp), "model_id": self.model_id,
                           "warnings": json.loads(row["warnings"] or "[]")}, sort_keys=True)
        event_id = conn.execute(alert_events.insert().values(
            alert_id=alert_id, kind=kind, at=stamp, body=body)).inserted_primary_key[0]
        if self.urls:
            conn.execute(webhook_deliveries.insert(), [
                {"event_id": event_id, "url": u, "state": "pending", "attempts": 0,
                 "next_attempt_at": stamp} for u in self.urls])

    def ack(self, conn, alert_id: int, note: str | None, cycle: int | None, stamp: float) -> dict:
        """Acknowledge an alert (active or cleared, not yet acknowledged).

        Raises:
            ApiError: 404 no such alert, 409 already acknowledged.
        """
        row = conn.execute(select(alerts).where(alerts.c.id == alert_id)).mappings().first()
        if row is None:
            raise ApiError(404, ["path", "alert_id"], f"no alert {alert_id}", "not_found")
        if row["state"].endswith("_acknowledged") and not row["state"].endswith("unacknowledged"):
            raise ApiError(409, ["path", "alert_id"], f"alert {alert_id} was acknowledged at "
                           f"{iso(row['acknowledged_at'])}", "conflict")
        new_state = "active_acknowledged" if row["state"] in OPEN_STATES else "cleared_acknowledged"
        conn.execute(update(alerts).where(alerts.c.id == alert_id).values(
            state=new_state, acknowledged_at=stamp, acknowledged_cycle=cycle, ack_note=note))
        self.event(conn, alert_id, "acknowledged", stamp)
        return dict(conn.execute(select(alerts).where(alerts.c.id == alert_id)).mappings().one())
