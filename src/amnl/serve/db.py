"""The service's database: tables, engine, and the versioned schema (SQLAlchemy 2 Core).

SQLite (a file, WAL) by default, PostgreSQL by URL (``postgresql+psycopg://``). Every statement
is built by SQLAlchemy with bound parameters; nothing is pickled.

Data model (schema version 1):

* ``amnl_meta``: key/value facts about the database: ``schema_version`` and the ``model_id``
  whose preprocessing the stored states and model inputs belong to.
* ``assets``: one row per asset: its last cycle, its online state snapshot
  (:meth:`amnl.features.online.AssetState.to_bytes`, written in the transaction that stores
  the readings) and its latest prediction (RUL, health, probabilities, cycle, time).
* ``readings``: one row per (asset, cycle): the raw settings and sensors as received, and the
  model-ready feature row they produced (float32 bytes), from which any window can be rebuilt.
* ``predictions``: one row per (asset, cycle): RUL, health, probabilities, model id, time.

Schema version 2 adds the calibrated bounds (``rul_lower``, ``rul_upper``) to predictions and
to each asset's latest one, the asset's known failure cycle and alert hysteresis state, and:

* ``alerts``: one row per alert: asset, rule, severity, state, and the time, cycle and value of
  each transition (raised, acknowledged with a note, cleared); at most one open alert per
  asset and rule (a partial unique index);
* ``alert_events``: every transition as the JSON body the webhooks receive (an outbox);
* ``webhook_deliveries``: per event and webhook URL, its state and next attempt;
  ``webhook_attempts``: every attempt with its status code or error.
"""

from __future__ import annotations

import logging
import time

from sqlalchemy import (
    Column,
    Engine,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    select,
    text,
)
from sqlalchemy.exc import SQLAlchemyError

from amnl.errors import ConfigError
from amnl.features.labels import HEALTH_CLASSES
from amnl.features.online import READING_COLUMNS

logger = logging.getLogger(__name__)

#: The schema this code reads and writes.
SCHEMA_VERSION = 3
#: Longest asset id (the API validates it; the column holds it).
ASSET_ID_LENGTH = 64

metadata = MetaData()

meta = Table("amnl_meta", metadata,
             Column("key", String(64), primary_key=True),
             Column("value", String(256), nullable=False))

PROBABILITY_COLUMNS = [f"p_{c}" for c in HEALTH_CLASSES]


def _prediction_columns(nullable: bool) -> list[Column]:
    return [Column("rul", Float, nullable=nullable), Column("health", String(16), nullable=nullable),
            *(Column(c, Float, nullable=nullable) for c in PROBABILITY_COLUMNS),
            Column("model_id", String(64), nullable=nullable),
            Column("predicted_at", Float, nullable=nullable)]


assets = Table("assets", metadata,
               Column("asset_id", String(ASSET_ID_LENGTH), primary_key=True),
               Column("created_at", Float, nullable=False),
               Column("updated_at", Float, nullable=False),
               Column("first_cycle", Integer, nullable=False),
               Column("last_cycle", Integer, nullable=False),
               Column("n_readings", Integer, nullable=False),
               Column("state", LargeBinary, nullable=False),
               Column("predicted_cycle", Integer, nullable=True),
               *_prediction_columns(nullable=True))

readings = Table("readings", metadata,
                 Column("asset_id", String(ASSET_ID_LENGTH), primary_key=True),
                 Column("cycle", Integer, primary_key=True),
                 *(Column(c, Float, nullable=True) for c in READING_COLUMNS),
                 Column("features", LargeBinary, nullable=False),
                 Column("received_at", Float, nullable=False))

predictions = Table("predictions", metadata,
                    Column("asset_id", String(ASSET_ID_LENGTH), primary_key=True),
                    Column("cycle", Integer, primary_key=True),
                    *_prediction_columns(nullable=False))


alerts = Table("alerts", metadata,
               Column("id", Integer, primary_key=True, autoincrement=True),
               Column("asset_id", String(ASSET_ID_LENGTH), nullable=False),
               Column("rule", String(64), nullable=False),
               Column("severity", String(16), nullable=False),
               Column("state", String(32), nullable=False),
               Column("message", String(256), nullable=False),
               Column("raised_at", Float, nullable=False),
               Column("raised_cycle", Integer, nullable=False),
               Column("raised_value", Float, nullable=False),
               Column("acknowledged_at", Float, nullable=True),
               Column("acknowledged_cycle", Integer, nullable=True),
               Column("ack_note", String(1000), nullable=True),
               Column("cleared_at", Float, nullable=True),
               Column("cleared_cycle", Integer, nullable=True),
               Column("cleared_value", Float, nullable=True),
               Index("alerts_one_open", "asset_id", "rule", unique=True,
                     sqlite_where=text("state LIKE 'active%'"),
                     postgresql_where=text("state LIKE 'active%'")),
               Index("alerts_by_state", "state"))

alert_events = Table("alert_events", metadata,
                     Column("id", Integer, primary_key=True, autoincrement=True),
                     Column("alert_id", Integer, nullable=False),
                     Column("kind", String(16), nullable=False),
                     Column("at", Float, nullable=False),
                     Column("body", Text, nullable=False))

webhook_deliveries = Table("webhook_deliveries", metadata,
                           Column("id", Integer, primary_key=True, autoincrement=True),
                           Column("event_id", Integer, nullable=False),
                           Column("url", String(2000), nullable=False),
                           Column("state", String(16), nullable=False),  # pending/delivered/failed
                           Column("attempts", Integer, nullable=False),
                           Column("next_attempt_at", Float, nullable=False),
                           Index("deliveries_pending", "state", "next_attempt_at"))

webhook_attempts = Table("webhook_attempts", metadata,
                         Column("id", Integer, primary_key=True, autoincrement=True),
                         Column("delivery_id", Integer, nullable=False),
                         Column("attempt", Integer, nullable=False),
                         Column("at", Float, nullable=False),
                         Column("status_code", Integer, nullable=True),
                         Column("error", String(500), nullable=True),
                         Column("seconds", Float, nullable=False))

#: Columns version 2 adds to existing tables: (table, column, SQL type).
_V2_COLUMNS = [("predictions", "rul_lower", "FLOAT"), ("predictions", "rul_upper", "FLOAT"),
               ("assets", "rul_lower", "FLOAT"), ("assets", "rul_upper", "FLOAT"),
               ("assets", "failure_cycle", "INTEGER"), ("assets", "alert_state", "TEXT")]
for _table, _name, _type in _V2_COLUMNS:
    {"predictions": predictions, "assets": assets}[_table].append_column(
        Column(_name, Integer if _type == "INTEGER" else Text if _type == "TEXT" else Float,
               nullable=True))


def _migration_1(conn) -> None:
    """The first schema: meta, assets, readings, predictions (as version 1 had them)."""
    _create_without(conn, (meta, assets, readings, predictions), [*_V2_COLUMNS, *_V3_COLUMNS])


def _migration_2(conn) -> None:
    """Interval bounds, failures, alert state; the alert and webhook tables."""
    q = conn.dialect.identifier_preparer.quote
    for table, name, sql_type in _V2_COLUMNS:
        conn.exec_driver_sql(f"ALTER TABLE {q(table)} ADD COLUMN {q(name)} {sql_type}")
    _create_without(conn, (alerts, alert_events, webhook_deliveries, webhook_attempts),
                    _V3_COLUMNS)


def _create_without(conn, tables, later: list[tuple]) -> None:
    """Create ``tables`` without the columns a later version adds."""
    skip = {(t, c) for t, c, _ in later}
    old = MetaData()
    for table in tables:
        Table(table.name, old, *(Column(c.name, c.type, primary_key=c.primary_key,
                                        nullable=c.nullable, autoincrement=c.autoincrement)
                                 for c in table.columns if (table.name, c.name) not in skip),
              *(Index(i.name, *[c.name for c in i.columns], unique=i.unique, **i.dialect_kwargs)
                for i in table.indexes))
    old.create_all(conn)


#: Columns version 3 adds: the input warnings of each prediction (a JSON list of strings, NULL
#: when there are none), of each asset's latest prediction, and of the prediction that raised
#: an alert.
_V3_COLUMNS = [("predictions", "warnings", "TEXT"), ("assets", "warnings", "TEXT"),
               ("alerts", "warnings", "TEXT")]
for _table, _name, _type in _V3_COLUMNS:
    {"predictions": predictions, "assets": assets, "alerts": alerts}[_table].append_column(
        Column(_name, Text, nullable=True))


def _migration_3(conn) -> None:
    """Input warnings stored with every prediction, the asset's latest one and each alert."""
    q = conn.dialect.identifier_preparer.quote
    for table, name, sql_type in _V3_COLUMNS:
        conn.exec_driver_sql(f"ALTER TABLE {q(table)} ADD COLUMN {q(name)} {sql_type}")


#: version -> the function that brings the previous version to it, in order.
MIGRATIONS = {1: _migration_1, 2: _migration_2, 3: _migration_3}


def create_db_engine(url: str, *, synchronous: str = "NORMAL") -> Engine:
    """An engine for ``url``; SQLite files get WAL, ``synchronous`` and a busy timeout.

    Raises:
        ConfigError: an unknown database driver.
    """
    try:
        if url.startswith("sqlite"):
            engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

            @event.listens_for(engine, "connect")
            def _pragmas(dbapi_conn, _record):  # every new connection
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute(f"PRAGMA synchronous={synchronous}")  # one of DURABILITY's values
                cur.execute("PRAGMA busy_timeout=30000")
                cur.close()
        else:
            engine = create_engine(url, pool_pre_ping=True)
    except (ImportError, SQLAlchemyError) as exc:
        raise ConfigError(f"cannot use database {redact(url)}: {exc}") from None
    return engine


def redact(url: str) -> str:
    """``url`` without its password (for messages and logs)."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - only for display
        return "<database>"


def schema_version(conn) -> int:
    """The schema version of a database (0 when it has no amnl tables)."""
    from sqlalchemy import inspect

    if not inspect(conn).has_table(meta.name):
        return 0
    row = conn.execute(select(meta.c.value).where(meta.c.key == "schema_version")).first()
    return int(row[0]) if row else 0


def migrate(engine: Engine) -> int:
    """Bring the database to :data:`SCHEMA_VERSION` (each migration in one transaction).

    Returns:
        The version the database had before.

    Raises:
        ConfigError: the database was written by a newer amnl.
    """
    with engine.begin() as conn:
        before = schema_version(conn)
    if before > SCHEMA_VERSION:
        raise ConfigError(f"database {redact(str(engine.url))} has schema version {before}, newer "
                          f"than this amnl's {SCHEMA_VERSION}; upgrade amnl")
    for version in range(before + 1, SCHEMA_VERSION + 1):
        with engine.begin() as conn:
            MIGRATIONS[version](conn)
            set_meta(conn, "schema_version", str(version))
        logger.info("database schema migrated to version %d", version)
    return before


def get_meta(conn, key: str) -> str | None:
    row = conn.execute(select(meta.c.value).where(meta.c.key == key)).first()
    return row[0] if row else None


def set_meta(conn, key: str, value: str) -> None:
    if get_meta(conn, key) is None:
        conn.execute(meta.insert().values(key=key, value=value))
    else:
        conn.execute(meta.update().where(meta.c.key == key).values(value=value))


def now() -> float:
    """Timestamps are Unix seconds (UTC), as floats."""
    return time.time()
