"""The service's SQL on SQLAlchemy Core (bound parameters only): readings, states,
predictions and the reads; the alert rows are written by :mod:`amnl.serve.alert_book`.

Writes take a connection inside the caller's transaction (:class:`amnl.serve.writer.Writer`
owns them); reads open their own.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
from sqlalchemy import (
    Connection,
    Engine,
    and_,
    bindparam,
    delete,
    false,
    func,
    or_,
    select,
    true,
)

from amnl.features.online import READING_COLUMNS
from amnl.serve.db import PROBABILITY_COLUMNS, alerts, assets, predictions, readings


def insert_ignore(table, dialect: str):
    """``INSERT ... ON CONFLICT DO NOTHING`` for SQLite and PostgreSQL."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table).on_conflict_do_nothing()


@dataclass
class StoredAsset:
    """What a restart needs of an asset: its state snapshot and where it stands."""

    asset_id: str
    first_cycle: int
    last_cycle: int
    n_readings: int
    state: bytes
    alert_state: str | None = None
    failure_cycle: int | None = None


class Store:
    """The service's reads and writes.

    Args:
        engine: from :func:`amnl.serve.db.create_db_engine`, migrated.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._insert_prediction = insert_ignore(predictions, self.dialect)
        latest = {c: bindparam(c) for c in ("rul", "rul_lower", "rul_upper", "health",
                                            *PROBABILITY_COLUMNS, "model_id", "predicted_at",
                                            "warnings")}
        # the statements of every commit, on the driver's executemany with positional
        # parameters (the Core path costs more per row than the database does)
        q = engine.dialect.identifier_preparer.quote
        mark = "?" if engine.dialect.paramstyle == "qmark" else "%s"
        cols = ", ".join(q(c) for c in READING_ROW)
        self._insert_readings_sql = (f"INSERT INTO {q(readings.name)} ({cols}) VALUES "
                                     f"({', '.join([mark] * len(READING_ROW))})")
        self._update_states_sql = (
            f"UPDATE {q(assets.name)} SET {q('last_cycle')} = {mark}, {q('n_readings')} = {mark}, "
            f"{q('state')} = {mark}, {q('updated_at')} = {mark} WHERE {q('asset_id')} = {mark}")
        self._update_alert_states_sql = (f"UPDATE {q(assets.name)} SET {q('alert_state')} = "
                                         f"{mark} WHERE {q('asset_id')} = {mark}")
        self._update_latest = (
            assets.update()
            .where(and_(assets.c.asset_id == bindparam("b_asset"),
                        or_(assets.c.predicted_cycle.is_(None),
                            assets.c.predicted_cycle < bindparam("b_cycle"))))
            .values(predicted_cycle=bindparam("b_cycle"), **latest))

    # -- writes (inside the writer's transaction) -------------------------------------------
    def insert_assets(self, conn: Connection, rows: list[dict]) -> None:
        if rows:
            conn.execute(assets.insert(), rows)

    def update_states(self, conn: Connection, rows: list[tuple]) -> None:
        """Tuples of (last_cycle, n_readings, state, updated_at, asset_id)."""
        if rows:
            conn.exec_driver_sql(self._update_states_sql, rows)

    def update_alert_states(self, conn: Connection, rows: list[tuple]) -> None:
        """Tuples of (alert_state JSON, asset_id)."""
        if rows:
            conn.exec_driver_sql(self._update_alert_states_sql, rows)

    def insert_readings(self, conn: Connection, rows: list[tuple]) -> None:
        """Tuples in :data:`READING_ROW` order (:func:`reading_row`)."""
        if rows:
            conn.exec_driver_sql(self._insert_readings_sql, rows)

    def insert_predictions(self, conn: Connection, rows: list[dict]) -> None:
        """Prediction rows (a repeated (asset, cycle) is ignored: recomputed ones are equal),
        and each asset's latest prediction moved forward."""
        if not rows:
            return
        conn.execute(self._insert_prediction, rows)
        latest: dict[str, dict] = {}
        for r in rows:
            if r["asset_id"] not in latest or r["cycle"] > latest[r["asset_id"]]["cycle"]:
                latest[r["asset_id"]] = r
        conn.execute(self._update_latest,
                     [{"b_asset": r["asset_id"], "b_cycle": r["cycle"],
                       **{k: v for k, v in r.items() if k not in ("asset_id", "cycle")}}
                      for r in latest.values()])

    def delete_asset(self, conn: Connection, asset_id: str) -> bool:
        """The asset's readings, predictions, state and alerts (the events already sent stay,
        as the record of what was sent)."""
        for table in (predictions, readings, alerts):
            conn.execute(delete(table).where(table.c.asset_id == asset_id))
        return conn.execute(delete(assets).where(assets.c.asset_id == asset_id)).rowcount > 0

    # -- reads ------------------------------------------------------------------------------
    def stored_readings(self, conn: Connection, asset_id: str, lo: int, hi: int
                        ) -> dict[int, np.ndarray]:
        """Raw values of an asset's cycles ``lo..hi`` (NaN where a sensor was not sent)."""
        cols = [readings.c[c] for c in READING_COLUMNS]
        rows = conn.execute(select(readings.c.cycle, *cols).where(
            readings.c.asset_id == asset_id, readings.c.cycle.between(lo, hi))).all()
        return {int(r[0]): np.array([np.nan if v is None else v for v in r[1:]], np.float64)
                for r in rows}

    def iter_assets(self, chunk: int = 1000) -> Iterator[StoredAsset]:
        """Every asset's snapshot, one at a time (a bounded restart keeps only some states)."""
        with self.engine.connect() as conn:
            result = (conn.execution_options(stream_results=True, yield_per=chunk)
                      .execute(select(*_SNAPSHOT_COLUMNS)))
            for r in result:
                yield _stored_asset(r)

    def load_asset(self, asset_id: str) -> StoredAsset | None:
        """One asset's snapshot (an asset the service does not hold in memory)."""
        with self.engine.connect() as conn:
            r = conn.execute(select(*_SNAPSHOT_COLUMNS)
                             .where(assets.c.asset_id == asset_id)).first()
        return None if r is None else _stored_asset(r)

    def predictions_after(self, asset_cycles: dict[str, int]) -> dict[str, list[dict]]:
        """Each asset's stored predictions after a cycle (alert evaluation resumes there)."""
        out: dict[str, list[dict]] = {}
        with self.engine.connect() as conn:
            for a, c in asset_cycles.items():
                rows = conn.execute(select(predictions).where(
                    predictions.c.asset_id == a, predictions.c.cycle > c)).mappings().all()
                if rows:
                    out[a] = [dict(r) for r in rows]
        return out

    def set_failure(self, conn: Connection, asset_id: str, cycle: int) -> None:
        conn.execute(assets.update().where(assets.c.asset_id == asset_id)
                     .values(failure_cycle=cycle))

    def alerts(self, *, state: str | None = None, asset_id: str | None = None,
               limit: int = 100, offset: int = 0) -> tuple[int, list[dict]]:
        """Alerts, newest first; ``state`` may be ``open`` (both active states) or a state."""
        where = []
        if state == "open":
            where.append(alerts.c.state.like("active%"))
        elif state is not None:
            where.append(alerts.c.state == state)
        if asset_id is not None:
            where.append(alerts.c.asset_id == asset_id)
        with self.engine.connect() as conn:
            total = conn.execute(select(func.count()).select_from(alerts).where(*where)).scalar_one()
            rows = conn.execute(select(alerts).where(*where).order_by(alerts.c.id.desc())
                                .limit(limit).offset(offset)).mappings().all()
        return int(total), [dict(r) for r in rows]

    def alert(self, alert_id: int) -> dict | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(alerts).where(alerts.c.id == alert_id)).mappings().first()
        return None if row is None else dict(row)

    def open_alerts_by_severity(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(alerts.c.severity, func.count())
                                .where(alerts.c.state.like("active%"))
                                .group_by(alerts.c.severity)).all()
        return {s: int(n) for s, n in rows}

    def failed_predictions(self, asset_id: str | None = None) -> list[dict]:
        """Predictions of the assets whose failure cycle is known (or of one), with it."""
        where = [] if asset_id is None else [assets.c.asset_id == asset_id]
        q = (select(predictions.c.asset_id, predictions.c.cycle, predictions.c.rul,
                    predictions.c.rul_lower, predictions.c.rul_upper, assets.c.failure_cycle)
             .join(assets, assets.c.asset_id == predictions.c.asset_id)
             .where(assets.c.failure_cycle.is_not(None), *where)
             .order_by(predictions.c.asset_id, predictions.c.cycle))
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]

    def deliveries(self, event_id: int | None = None) -> list[dict]:
        """Webhook deliveries and their attempts (for the API and tests)."""
        from amnl.serve.db import webhook_attempts, webhook_deliveries

        where = [] if event_id is None else [webhook_deliveries.c.event_id == event_id]
        with self.engine.connect() as conn:
            out = [dict(r) for r in conn.execute(select(webhook_deliveries).where(*where)
                                                 .order_by(webhook_deliveries.c.id)).mappings()]
            for d in out:
                d["attempts_log"] = [dict(r) for r in conn.execute(
                    select(webhook_attempts).where(webhook_attempts.c.delivery_id == d["id"])
                    .order_by(webhook_attempts.c.attempt)).mappings()]
        return out

    def unpredicted(self, limit: int) -> list[tuple[str, int]]:
        """(asset, cycle) of stored readings without a prediction, oldest cycles first."""
        r, p = readings.alias("r"), predictions.alias("p")
        q = (select(r.c.asset_id, r.c.cycle)
             .select_from(r.outerjoin(p, and_(p.c.asset_id == r.c.asset_id,
                                               p.c.cycle == r.c.cycle)))
             .where(p.c.cycle.is_(None)).order_by(r.c.cycle, r.c.asset_id).limit(limit))
        with self.engine.connect() as conn:
            return [(a, int(c)) for a, c in conn.execute(q).all()]

    def unpredicted_by_asset(self) -> dict[str, int]:
        """How many stored readings of each asset have no prediction (one scan, at start)."""
        r, p = readings.alias("r"), predictions.alias("p")
        q = (select(r.c.asset_id, func.count())
             .select_from(r.outerjoin(p, and_(p.c.asset_id == r.c.asset_id,
                                               p.c.cycle == r.c.cycle)))
             .where(p.c.cycle.is_(None)).group_by(r.c.asset_id))
        with self.engine.connect() as conn:
            return {a: int(n) for a, n in conn.execute(q).all()}

    def feature_rows(self, asset_id: str, lo: int, hi: int) -> tuple[np.ndarray, list[bytes]]:
        """Cycles and model-ready feature rows (float32 bytes) of an asset's cycles lo..hi."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(readings.c.cycle, readings.c.features)
                                .where(readings.c.asset_id == asset_id,
                                       readings.c.cycle.between(lo, hi))
                                .order_by(readings.c.cycle)).all()
        return np.array([r[0] for r in rows], np.int64), [bytes(r[1]) for r in rows]

    def fleet(self, *, health: str | None, limit: int, offset: int, search: str | None = None,
              by_lower_bound: bool = False, count: bool = True) -> tuple[int | None, list[dict]]:
        """Assets sorted by predicted RUL (unpredicted last), optionally of one health state
        and with ``search`` in their id; the total (None without ``count``) and a page.

        ``by_lower_bound`` gives the dashboard's ranking instead (:data:`FLEET_RANK`, read
        from its index: a page costs its rows, not the table): live assets by RUL lower bound,
        failed ones last; there ``health`` may also be ``failed``, and a health state means the
        live assets in it."""
        where = self._fleet_where(health, search, by_lower_bound)
        order = (fleet_rank(health) if by_lower_bound
                 else [assets.c.rul.is_(None), assets.c.rul, assets.c.asset_id])
        q = select(*_ASSET_COLUMNS).where(*where).order_by(*order).limit(limit).offset(offset)
        with self.engine.connect() as conn:
            total = (conn.execute(select(func.count()).select_from(assets).where(*where))
                     .scalar_one() if count else None)
            return (None if total is None else int(total),
                    [dict(r._mapping) for r in conn.execute(q)])

    def fleet_chunks(self, *, health: str | None, search: str | None, offset: int,
                     chunk: int) -> Iterator[list[dict]]:
        """The dashboard's ranking (as :meth:`fleet` with ``by_lower_bound``) from ``offset`` to
        the end, ``chunk`` rows at a time, from one query: one consistent snapshot however
        slowly it is read. Close the generator to end it early."""
        where = self._fleet_where(health, search, True)
        q = select(*_ASSET_COLUMNS).where(*where).order_by(*fleet_rank(health)).offset(offset)
        with self.engine.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=chunk).execute(q)
            for part in result.partitions():
                yield [dict(r._mapping) for r in part]

    @staticmethod
    def _fleet_where(health: str | None, search: str | None, by_lower_bound: bool) -> list:
        where = []
        failed = FLEET_RANK[0]  # as the index has it, so that it is searched, not scanned
        if health == "failed" and by_lower_bound:
            where.append(failed == true())
        elif health is not None:
            where.append(assets.c.health == health)
            if by_lower_bound:
                where.append(failed == false())
        if search:
            where.append(assets.c.asset_id.contains(search, autoescape=True))
        return where

    def fleet_counts(self) -> dict[str, int]:
        """Assets by health state of their latest prediction (``pending`` before the first),
        failed ones (a recorded failure) counted as ``failed`` whatever their last health."""
        failed = assets.c.failure_cycle.is_not(None)
        with self.engine.connect() as conn:
            rows = conn.execute(select(assets.c.health, failed, func.count())
                                .group_by(assets.c.health, failed)).all()
        out: dict[str, int] = {}
        for health, is_failed, n in rows:
            key = "failed" if is_failed else (health or "pending")
            out[key] = out.get(key, 0) + int(n)
        return out

    def failures(self, asset_ids: Iterable[str]) -> dict[str, int]:
        """The recorded failure cycle of those of ``asset_ids`` that have one."""
        ids = sorted(set(asset_ids))
        if not ids:
            return {}
        with self.engine.connect() as conn:
            return {a: int(c) for a, c in conn.execute(
                select(assets.c.asset_id, assets.c.failure_cycle)
                .where(assets.c.asset_id.in_(ids), assets.c.failure_cycle.is_not(None)))}

    def latest_readings(self, asset_id: str, n: int) -> list[dict]:
        """The asset's last ``n`` readings as received (newest first)."""
        cols = [readings.c.cycle, *(readings.c[c] for c in READING_COLUMNS)]
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(
                select(*cols).where(readings.c.asset_id == asset_id)
                .order_by(readings.c.cycle.desc()).limit(n)).mappings()]

    def asset(self, asset_id: str) -> dict | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(*_ASSET_COLUMNS)
                               .where(assets.c.asset_id == asset_id)).first()
        return None if row is None else dict(row._mapping)

    def predictions(self, asset_id: str, *, from_cycle: int | None = None,
                    to_cycle: int | None = None, limit: int | None = None) -> list[dict]:
        where = [predictions.c.asset_id == asset_id]
        if from_cycle is not None:
            where.append(predictions.c.cycle >= from_cycle)
        if to_cycle is not None:
            where.append(predictions.c.cycle <= to_cycle)
        q = select(predictions).where(*where).order_by(predictions.c.cycle).limit(limit)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def count(self, table_name: str) -> int:
        table = {"readings": readings, "predictions": predictions, "assets": assets}[table_name]
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(table)).scalar_one())

    def ping(self) -> None:
        """Raises when the database cannot be reached."""
        with self.engine.connect() as conn:
            conn.execute(select(1)).scalar_one()


#: What a restart (or a reload of an evicted asset) reads of an asset: :class:`StoredAsset`.
_SNAPSHOT_COLUMNS = [assets.c[c] for c in ("asset_id", "first_cycle", "last_cycle",
                                           "n_readings", "state", "alert_state",
                                           "failure_cycle")]


def _stored_asset(r) -> StoredAsset:
    return StoredAsset(r[0], int(r[1]), int(r[2]), int(r[3]), bytes(r[4]), r[5],
                       None if r[6] is None else int(r[6]))


#: What the reads of an asset return: every column but the snapshots.
_ASSET_COLUMNS = [c for c in assets.c if c.name not in ("state", "alert_state")]
#: The dashboard's ranking of the fleet: live assets before failed ones, predicted before
#: unpredicted, by RUL lower bound (RUL where there is none), then id; the expressions of the
#: indexes ``assets_by_rank`` and ``assets_by_health_rank`` (:mod:`amnl.serve.db`), which
#: the database uses only for the same expressions.
FLEET_RANK = [assets.c.failure_cycle.is_not(None), assets.c.rul.is_(None),
              func.coalesce(assets.c.rul_lower, assets.c.rul), assets.c.asset_id]



def fleet_rank(health: str | None) -> list:
    """The ranking's ORDER BY for a page of ``health`` (None: the whole fleet): with a state
    the failed flag is fixed by the WHERE, and ordering by it too would make the database
    sort the matching rows instead of reading them in the index's order."""
    return FLEET_RANK if health is None else FLEET_RANK[1:]


#: Column order of :func:`reading_row`'s tuples.
READING_ROW = ["asset_id", "cycle", *READING_COLUMNS, "features", "received_at"]


def reading_row(asset_id: str, cycle: int, raw: np.ndarray, features: np.ndarray,
                received_at: float) -> tuple:
    """A ``readings`` row in :data:`READING_ROW` order: missing sensors (NaN) become NULL."""
    values = [None if v != v else v for v in raw.tolist()]  # noqa: PLR0124 - NaN test
    return (asset_id, int(cycle), *values,
            np.ascontiguousarray(features, np.float32).tobytes(), received_at)


def windows_from_rows(cycles: np.ndarray, rows: Iterable[bytes], wanted: Iterable[int],
                      window: int, n_features: int) -> dict[int, np.ndarray]:
    """The window at each ``wanted`` cycle from stored feature rows (consecutive cycles from
    the asset's first or from at least ``window - 1`` before the earliest wanted one), with
    the spec's front padding."""
    from amnl.features.windows import padded_rows

    x = np.stack([np.frombuffer(b, np.float32, n_features) for b in rows])
    pos = {int(c): i for i, c in enumerate(cycles)}
    wanted = [int(c) for c in wanted]
    idx = padded_rows(np.array([pos[c] for c in wanted], np.int64), window)
    return {c: x[i] for c, i in zip(wanted, idx)}
