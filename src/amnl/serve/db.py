"""The service's database: tables, engine, and the versioned schema (SQLAlchemy 2 Core).

SQLite (a file, WAL) by default, PostgreSQL by URL (``postgresql+psycopg://``). Every statement
is built by SQLAlchemy with bound parameters; nothing is pickled.

Data model (schema version 3, declared once in full in :data:`metadata`):

* ``amnl_meta``: key/value facts about the database: ``schema_version`` and the ``model_id``
  whose preprocessing the stored states and model inputs belong to.
* ``assets``: one row per asset: its last cycle, its online state snapshot
  (:meth:`amnl.features.online.AssetState.to_bytes`, written in the transaction that stores
  the readings), its latest prediction (RUL and bounds, health, probabilities, cycle, time,
  input warnings), its known failure cycle and alert hysteresis state.
* ``readings``: one row per (asset, cycle): the raw settings and sensors as received, and the
  model-ready feature row they produced (float32 bytes), from which any window can be rebuilt.
* ``predictions``: one row per (asset, cycle): RUL and its calibrated bounds, health,
  probabilities, model id, time, input warnings.
* ``alerts``: one row per alert: asset, rule, severity, state, and the time, cycle and value of
  each transition (raised, acknowledged with a note, cleared), the input warnings of the
  prediction that raised it; at most one open alert per asset and rule (a partial unique
  index);
* ``alert_events``: every transition as the JSON body the webhooks receive (an outbox);
* ``webhook_deliveries``: per event and webhook URL, its state and next attempt;
  ``webhook_attempts``: every attempt with its status code or error.

Versions: 1 created the first four tables; 2 added the interval bounds, the failure cycle and
the alert state, and the alert and webhook tables; 3 added the ``warnings`` columns (a JSON list
of strings, NULL when there are none).

Migrations are frozen DDL, not Alembic. Each version's statements are written out below as that
version created its tables (:data:`_DDL`, the same text for SQLite and PostgreSQL but for the two
types they spell differently) and are never edited once released; a new version appends its
own. So a database made by any release is brought forward by exactly the statements later
releases ran, whatever :data:`metadata` looks like today, and
``tests/serve/test_migrations.py`` checks that migrating from nothing gives the tables
:data:`metadata` declares. Alembic would do the same with a migration environment, a version
table and a command to run beside the server, and its autogenerate still needs a person to
check each script; for three small additive migrations that the server runs itself at start,
forty lines of SQL are lighter and easier to read.

Migrating holds a lock for its one transaction (:func:`schema_lock`): ``BEGIN IMMEDIATE`` on
SQLite (the database file's write lock), ``pg_advisory_xact_lock`` on PostgreSQL. Two servers
started at once on a new database both come up: the second waits, then finds the schema
current. All of a start's migrations commit together or not at all (DDL is transactional on
both).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

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
    inspect,
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
#: The PostgreSQL advisory lock held while migrating: "amnl" in ASCII.
MIGRATION_LOCK_KEY = 0x616D6E6C

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


#: The order of the dashboard's fleet, as SQL: live assets before failed ones, predicted before
#: unpredicted, by RUL lower bound (RUL without one), then id.
_RANK_SQL = ("(failure_cycle IS NOT NULL)", "(rul IS NULL)", "coalesce(rul_lower, rul)",
             "asset_id")

# Columns a later version added come last, as ALTER TABLE ... ADD COLUMN put them.
assets = Table("assets", metadata,
               Column("asset_id", String(ASSET_ID_LENGTH), primary_key=True),
               Column("created_at", Float, nullable=False),
               Column("updated_at", Float, nullable=False),
               Column("first_cycle", Integer, nullable=False),
               Column("last_cycle", Integer, nullable=False),
               Column("n_readings", Integer, nullable=False),
               Column("state", LargeBinary, nullable=False),
               Column("predicted_cycle", Integer, nullable=True),
               *_prediction_columns(nullable=True),
               Column("rul_lower", Float, nullable=True),  # version 2
               Column("rul_upper", Float, nullable=True),
               Column("failure_cycle", Integer, nullable=True),
               Column("alert_state", Text, nullable=True),
               Column("warnings", Text, nullable=True),  # version 3
               # version 3: the dashboard's ranking (amnl.serve.store.FLEET_RANK), whole and
               # by health, so a page of it reads its rows, not the table
               Index("assets_by_rank", *(text(e) for e in _RANK_SQL)),
               Index("assets_by_health_rank", "health", *(text(e) for e in _RANK_SQL)))

readings = Table("readings", metadata,
                 Column("asset_id", String(ASSET_ID_LENGTH), primary_key=True),
                 Column("cycle", Integer, primary_key=True),
                 *(Column(c, Float, nullable=True) for c in READING_COLUMNS),
                 Column("features", LargeBinary, nullable=False),
                 Column("received_at", Float, nullable=False))

predictions = Table("predictions", metadata,
                    Column("asset_id", String(ASSET_ID_LENGTH), primary_key=True),
                    Column("cycle", Integer, primary_key=True),
                    *_prediction_columns(nullable=False),
                    Column("rul_lower", Float, nullable=True),  # version 2
                    Column("rul_upper", Float, nullable=True),
                    Column("warnings", Text, nullable=True))  # version 3

alerts = Table("alerts", metadata,  # version 2
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
               Column("warnings", Text, nullable=True),  # version 3
               Index("alerts_one_open", "asset_id", "rule", unique=True,
                     sqlite_where=text("state LIKE 'active%'"),
                     postgresql_where=text("state LIKE 'active%'")),
               Index("alerts_by_state", "state"))

alert_events = Table("alert_events", metadata,  # version 2
                     Column("id", Integer, primary_key=True, autoincrement=True),
                     Column("alert_id", Integer, nullable=False),
                     Column("kind", String(16), nullable=False),
                     Column("at", Float, nullable=False),
                     Column("body", Text, nullable=False))

webhook_deliveries = Table("webhook_deliveries", metadata,  # version 2
                           Column("id", Integer, primary_key=True, autoincrement=True),
                           Column("event_id", Integer, nullable=False),
                           Column("url", String(2000), nullable=False),
                           Column("state", String(16), nullable=False),  # pending/delivered/failed
                           Column("attempts", Integer, nullable=False),
                           Column("next_attempt_at", Float, nullable=False),
                           Index("deliveries_pending", "state", "next_attempt_at"))

webhook_attempts = Table("webhook_attempts", metadata,  # version 2
                         Column("id", Integer, primary_key=True, autoincrement=True),
                         Column("delivery_id", Integer, nullable=False),
                         Column("attempt", Integer, nullable=False),
                         Column("at", Float, nullable=False),
                         Column("status_code", Integer, nullable=True),
                         Column("error", String(500), nullable=True),
                         Column("seconds", Float, nullable=False))

#: The two types SQLite and PostgreSQL spell differently in :data:`_DDL`.
_TYPES = {"sqlite": {"blob": "BLOB", "serial": "INTEGER"},
          "postgresql": {"blob": "BYTEA", "serial": "SERIAL"}}

#: version -> the statements that brought the previous version to it, as released (frozen:
#: never edit one; a new version adds its own).
_DDL = {
    1: """
CREATE TABLE amnl_meta (
    "key" VARCHAR(64) NOT NULL,
    value VARCHAR(256) NOT NULL,
    PRIMARY KEY ("key")
);
CREATE TABLE assets (
    asset_id VARCHAR(64) NOT NULL,
    created_at FLOAT NOT NULL,
    updated_at FLOAT NOT NULL,
    first_cycle INTEGER NOT NULL,
    last_cycle INTEGER NOT NULL,
    n_readings INTEGER NOT NULL,
    state {blob} NOT NULL,
    predicted_cycle INTEGER,
    rul FLOAT,
    health VARCHAR(16),
    p_healthy FLOAT,
    p_degrading FLOAT,
    p_critical FLOAT,
    model_id VARCHAR(64),
    predicted_at FLOAT,
    PRIMARY KEY (asset_id)
);
CREATE TABLE readings (
    asset_id VARCHAR(64) NOT NULL,
    cycle INTEGER NOT NULL,
    setting_1 FLOAT, setting_2 FLOAT, setting_3 FLOAT,
    s_1 FLOAT, s_2 FLOAT, s_3 FLOAT, s_4 FLOAT, s_5 FLOAT, s_6 FLOAT, s_7 FLOAT,
    s_8 FLOAT, s_9 FLOAT, s_10 FLOAT, s_11 FLOAT, s_12 FLOAT, s_13 FLOAT, s_14 FLOAT,
    s_15 FLOAT, s_16 FLOAT, s_17 FLOAT, s_18 FLOAT, s_19 FLOAT, s_20 FLOAT, s_21 FLOAT,
    features {blob} NOT NULL,
    received_at FLOAT NOT NULL,
    PRIMARY KEY (asset_id, cycle)
);
CREATE TABLE predictions (
    asset_id VARCHAR(64) NOT NULL,
    cycle INTEGER NOT NULL,
    rul FLOAT NOT NULL,
    health VARCHAR(16) NOT NULL,
    p_healthy FLOAT NOT NULL,
    p_degrading FLOAT NOT NULL,
    p_critical FLOAT NOT NULL,
    model_id VARCHAR(64) NOT NULL,
    predicted_at FLOAT NOT NULL,
    PRIMARY KEY (asset_id, cycle)
)
""",
    2: """
ALTER TABLE predictions ADD COLUMN rul_lower FLOAT;
ALTER TABLE predictions ADD COLUMN rul_upper FLOAT;
ALTER TABLE assets ADD COLUMN rul_lower FLOAT;
ALTER TABLE assets ADD COLUMN rul_upper FLOAT;
ALTER TABLE assets ADD COLUMN failure_cycle INTEGER;
ALTER TABLE assets ADD COLUMN alert_state TEXT;
CREATE TABLE alerts (
    id {serial} NOT NULL,
    asset_id VARCHAR(64) NOT NULL,
    rule VARCHAR(64) NOT NULL,
    severity VARCHAR(16) NOT NULL,
    state VARCHAR(32) NOT NULL,
    message VARCHAR(256) NOT NULL,
    raised_at FLOAT NOT NULL,
    raised_cycle INTEGER NOT NULL,
    raised_value FLOAT NOT NULL,
    acknowledged_at FLOAT,
    acknowledged_cycle INTEGER,
    ack_note VARCHAR(1000),
    cleared_at FLOAT,
    cleared_cycle INTEGER,
    cleared_value FLOAT,
    PRIMARY KEY (id)
);
CREATE INDEX alerts_by_state ON alerts (state);
CREATE UNIQUE INDEX alerts_one_open ON alerts (asset_id, rule) WHERE state LIKE 'active%';
CREATE TABLE alert_events (
    id {serial} NOT NULL,
    alert_id INTEGER NOT NULL,
    kind VARCHAR(16) NOT NULL,
    at FLOAT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (id)
);
CREATE TABLE webhook_deliveries (
    id {serial} NOT NULL,
    event_id INTEGER NOT NULL,
    url VARCHAR(2000) NOT NULL,
    state VARCHAR(16) NOT NULL,
    attempts INTEGER NOT NULL,
    next_attempt_at FLOAT NOT NULL,
    PRIMARY KEY (id)
);
CREATE INDEX deliveries_pending ON webhook_deliveries (state, next_attempt_at);
CREATE TABLE webhook_attempts (
    id {serial} NOT NULL,
    delivery_id INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    at FLOAT NOT NULL,
    status_code INTEGER,
    error VARCHAR(500),
    seconds FLOAT NOT NULL,
    PRIMARY KEY (id)
)
""",
    3: """
ALTER TABLE predictions ADD COLUMN warnings TEXT;
ALTER TABLE assets ADD COLUMN warnings TEXT;
ALTER TABLE alerts ADD COLUMN warnings TEXT;
CREATE INDEX assets_by_rank ON assets ((failure_cycle IS NOT NULL), (rul IS NULL),
    coalesce(rul_lower, rul), asset_id);
CREATE INDEX assets_by_health_rank ON assets (health, (failure_cycle IS NOT NULL),
    (rul IS NULL), coalesce(rul_lower, rul), asset_id)
""",
}


def migration_statements(version: int, dialect: str) -> list[str]:
    """The SQL that brings a database of ``version - 1`` to ``version`` on ``dialect``."""
    return [s.strip() for s in _DDL[version].format(**_TYPES[dialect]).split(";") if s.strip()]


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
                cur.execute("PRAGMA busy_timeout=30000")
                _wal(cur)
                cur.execute(f"PRAGMA synchronous={synchronous}")  # one of DURABILITY's values
                cur.close()
        else:
            engine = create_engine(url, pool_pre_ping=True)
    except (ImportError, SQLAlchemyError) as exc:
        raise ConfigError(f"cannot use database {redact(url)}: {exc}") from None
    return engine


def _wal(cur, seconds: float = 30.0) -> None:
    """Put a SQLite file in WAL mode (it stays so). Switching needs the file to itself, and
    SQLite answers "database is locked" at once, without its busy handler, when another
    connection holds it (two servers starting on one new file): retried until ``seconds``."""
    import sqlite3

    deadline = time.monotonic() + seconds
    while True:
        try:
            if cur.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def redact(url: str) -> str:
    """``url`` without its password (for messages and logs)."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - only for display
        return "<database>"


def schema_version(conn) -> int:
    """The schema version of a database (0 when it has no amnl tables)."""
    if not inspect(conn).has_table(meta.name):
        return 0
    row = conn.execute(select(meta.c.value).where(meta.c.key == "schema_version")).first()
    return int(row[0]) if row else 0


@contextmanager
def schema_lock(engine: Engine) -> Iterator:
    """A transaction that holds the database's schema lock; committed when the block ends.

    SQLite: ``BEGIN IMMEDIATE`` takes the file's write lock at once (another process waits up
    to the busy timeout). PostgreSQL: ``pg_advisory_xact_lock(MIGRATION_LOCK_KEY)``, released
    at commit or rollback; the lock's first statement comes before any read, so what a waiter
    reads next is what the holder committed.

    Raises:
        ConfigError: a database other than SQLite or PostgreSQL.
    """
    name = engine.dialect.name
    if name not in _TYPES:
        raise ConfigError(f"database {redact(str(engine.url))}: amnl's schema is written for "
                          f"SQLite and PostgreSQL, not {name}")
    with engine.connect() as conn:
        if name == "sqlite":  # pysqlite opens no transaction before DDL: open it ourselves
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        yield conn
        conn.commit()  # an exception skips this: the connection's close rolls back


def migrate(engine: Engine, to: int = SCHEMA_VERSION) -> int:
    """Bring the database to version ``to`` (:data:`SCHEMA_VERSION` unless a test builds an
    older one), under :func:`schema_lock`, in one transaction.

    Returns:
        The version the database had before.

    Raises:
        ConfigError: the database was written by a newer amnl, or is not SQLite or PostgreSQL.
    """
    with schema_lock(engine) as conn:
        before = schema_version(conn)
        if before > SCHEMA_VERSION:
            raise ConfigError(f"database {redact(str(engine.url))} has schema version {before}, "
                              f"newer than this amnl's {SCHEMA_VERSION}; upgrade amnl")
        for version in range(before + 1, to + 1):
            for statement in migration_statements(version, engine.dialect.name):
                conn.execute(text(statement))
            set_meta(conn, "schema_version", str(version))
    if to > before:
        logger.info("database schema migrated from version %d to %d", before, to)
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
