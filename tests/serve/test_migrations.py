"""The versioned schema: databases of every older version, with data, migrate to the current one
intact on SQLite and PostgreSQL; migrating from nothing gives the tables the code declares; two
servers starting at once on a new database both come up and migrate it once; a newer schema is
refused."""

from __future__ import annotations

import re
import threading
import types

import pytest
import sqlalchemy as sa

from amnl.errors import ConfigError
from amnl.serve import db

from .conftest import fresh_postgres_db

STATE = b"AMNS\x00\x01"
FEATURES = bytes(range(64))
V1_READING = {"asset_id": "e1", "cycle": 3, "setting_1": 0.5, "s_2": 641.82, "s_21": 23.4,
              "features": FEATURES, "received_at": 2.0}
V1_ASSET = {"asset_id": "e1", "created_at": 1.0, "updated_at": 2.0, "first_cycle": 1,
            "last_cycle": 3, "n_readings": 3, "state": STATE, "predicted_cycle": 3, "rul": 88.5,
            "health": "healthy", "p_healthy": 0.9, "p_degrading": 0.1, "p_critical": 0.0,
            "model_id": "m", "predicted_at": 2.0}
V1_PREDICTION = {"asset_id": "e1", "cycle": 3, "rul": 88.5, "health": "healthy",
                 "p_healthy": 0.9, "p_degrading": 0.1, "p_critical": 0.0, "model_id": "m",
                 "predicted_at": 2.0}
V2_ALERT = {"asset_id": "e1", "rule": "low_rul", "severity": "critical",
            "state": "active_unacknowledged", "message": "RUL < 30", "raised_at": 2.0,
            "raised_cycle": 3, "raised_value": 27.5}


def insert(conn, table: str, row: dict) -> None:
    """A row as an older amnl wrote it: plain SQL naming only that version's columns."""
    names = ", ".join(row)
    conn.execute(sa.text(f"INSERT INTO {table} ({names}) VALUES "
                         f"({', '.join(':' + k for k in row)})"), row)


def only(conn, table: sa.Table) -> dict:
    return dict(conn.execute(sa.select(table)).mappings().one())


def test_a_version_1_database_migrates_with_its_data(db_url):
    engine = db.create_db_engine(db_url)
    assert db.migrate(engine, to=1) == 0  # the frozen version-1 DDL, as amnl 1 wrote it
    with engine.begin() as conn:
        db.set_meta(conn, "model_id", "m")
        insert(conn, "assets", V1_ASSET)
        insert(conn, "readings", V1_READING)
        insert(conn, "predictions", V1_PREDICTION)
        assert not sa.inspect(conn).has_table("alerts")
    assert db.migrate(engine) == 1
    with engine.connect() as conn:
        assert db.schema_version(conn) == db.SCHEMA_VERSION == 3
        assert db.get_meta(conn, "model_id") == "m"
        asset = only(conn, db.assets)
        assert {k: asset[k] for k in V1_ASSET} == V1_ASSET
        assert {k: v for k, v in asset.items() if k not in V1_ASSET} == dict.fromkeys(
            ["rul_lower", "rul_upper", "failure_cycle", "alert_state", "warnings"])
        reading = only(conn, db.readings)
        assert {k: reading[k] for k in V1_READING} == V1_READING
        assert reading["s_1"] is None
        prediction = only(conn, db.predictions)
        assert {k: prediction[k] for k in V1_PREDICTION} == V1_PREDICTION
        assert (prediction["rul_lower"], prediction["rul_upper"], prediction["warnings"]) == \
            (None, None, None)
        assert sa.inspect(conn).has_table("alerts")
    assert db.migrate(engine) == 3  # idempotent
    with engine.begin() as conn:
        db.set_meta(conn, "schema_version", "9")
    with pytest.raises(ConfigError, match="newer than this amnl"):
        db.migrate(engine)
    engine.dispose()


def test_a_version_2_database_migrates_with_its_data(db_url):
    engine = db.create_db_engine(db_url)
    db.migrate(engine, to=2)
    asset = dict(V1_ASSET, rul_lower=70.0, rul_upper=101.0, failure_cycle=None,
                 alert_state='{"low_rul": [3, 0]}')
    prediction = dict(V1_PREDICTION, rul_lower=70.0, rul_upper=101.0)
    with engine.begin() as conn:
        insert(conn, "assets", asset)
        insert(conn, "predictions", prediction)
        insert(conn, "alerts", V2_ALERT)
        insert(conn, "alert_events", {"alert_id": 1, "kind": "raised", "at": 2.0, "body": "{}"})
        insert(conn, "webhook_deliveries", {"event_id": 1, "url": "http://x/hook",
                                            "state": "pending", "attempts": 1,
                                            "next_attempt_at": 3.0})
        insert(conn, "webhook_attempts", {"delivery_id": 1, "attempt": 1, "at": 2.5,
                                          "status_code": 500, "error": "boom", "seconds": 0.1})
    assert db.migrate(engine) == 2
    with engine.begin() as conn:
        got = only(conn, db.assets)
        assert {k: got[k] for k in asset} == asset and got["warnings"] is None
        got = only(conn, db.predictions)
        assert {k: got[k] for k in prediction} == prediction and got["warnings"] is None
        alert = only(conn, db.alerts)
        assert {k: alert[k] for k in V2_ALERT} == V2_ALERT
        assert alert["id"] == 1 and alert["warnings"] is None
        assert only(conn, db.webhook_attempts)["error"] == "boom"
        assert only(conn, db.webhook_deliveries)["attempts"] == 1
        # the ids still count on (SERIAL / SQLite's rowid), through the current tables
        new = conn.execute(db.alerts.insert().values(
            dict(V2_ALERT, asset_id="e2", warnings='["w"]'))).inserted_primary_key[0]
        assert new == 2
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:  # one open per rule
        conn.execute(db.alerts.insert().values(V2_ALERT))
    engine.dispose()


def reflect(engine) -> dict:
    """Every table's columns, primary key and indexes as the database reports them (SQLite's
    indexes as their SQL, spacing aside: SQLAlchemy does not reflect expression indexes there)."""
    found = sa.inspect(engine)
    out = {}
    for name in sorted(found.get_table_names()):
        columns = [{k: str(v) if k == "type" else v for k, v in c.items()}
                   for c in found.get_columns(name)]
        if engine.dialect.name == "sqlite":
            with engine.connect() as conn:
                indexes = [(i, re.sub(r"\s*([(),])\s*", r"\1", " ".join(sql.split())))
                           for i, sql in conn.execute(sa.text(
                               "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND "
                               "tbl_name = :t AND sql IS NOT NULL ORDER BY name"), {"t": name})]
        else:
            indexes = [{k: {o: str(w) for o, w in v.items()} if k == "dialect_options" else v
                        for k, v in i.items()}
                       for i in sorted(found.get_indexes(name), key=lambda i: i["name"])]
        out[name] = {"columns": columns, "primary_key": found.get_pk_constraint(name),
                     "indexes": indexes}
    return out


def test_migrating_from_nothing_gives_the_tables_the_code_declares(db_url, request, tmp_path):
    """The frozen DDL and :data:`db.metadata` cannot drift apart."""
    other = (f"sqlite:///{tmp_path / 'declared.db'}" if db_url.startswith("sqlite")
             else fresh_postgres_db(request.getfixturevalue("postgres_server")))
    migrated, declared = db.create_db_engine(db_url), db.create_db_engine(other)
    db.migrate(migrated)
    db.metadata.create_all(declared)
    got, want = reflect(migrated), reflect(declared)
    assert list(got) == list(want) == sorted(db.metadata.tables)
    for name in want:
        assert got[name] == want[name], name
    migrated.dispose()
    declared.dispose()


def test_two_servers_migrating_a_new_database_at_once_both_succeed(db_url):
    """Threads with an engine each (two servers' connection pools), let go at the same time."""
    n = 4
    start = threading.Barrier(n)
    befores, errors = [], []

    def server() -> None:
        engine = db.create_db_engine(db_url)
        try:
            start.wait()
            befores.append(db.migrate(engine))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=server) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert sorted(befores) == [0] + [db.SCHEMA_VERSION] * (n - 1)  # migrated once
    engine = db.create_db_engine(db_url)
    with engine.connect() as conn:
        assert conn.execute(sa.select(db.meta)).all() == [("schema_version", "3")]
    engine.dispose()


def test_an_unsupported_database_is_refused_with_a_message():
    driver = types.SimpleNamespace(paramstyle="format")  # no MySQL here: refused before use
    engine = sa.create_engine("mysql://amnl@127.0.0.1/amnl", module=driver)
    with pytest.raises(ConfigError, match="SQLite and PostgreSQL, not mysql"):
        db.migrate(engine)


def test_two_services_starting_at_once_on_a_new_database_both_come_up(db_url, predictor):
    """Migration and the model claim (``amnl_meta.model_id``) are both under the lock."""
    from amnl.config import InferenceConfig
    from amnl.serve.service import FleetService
    from amnl.serve.settings import ServeSettings

    services = [FleetService(ServeSettings(inference=InferenceConfig(runtime="onnx"), db=db_url),
                             predictor()) for _ in range(2)]
    start = threading.Barrier(len(services))
    errors = []

    def run(service) -> None:
        try:
            start.wait()
            service.start()
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in services]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert not errors, errors
        assert all(s.started_at is not None for s in services)
        with services[0].engine.connect() as conn:
            assert db.schema_version(conn) == db.SCHEMA_VERSION
            assert db.get_meta(conn, "model_id") == predictor().model_id
    finally:
        for s in services:
            s.stop()
