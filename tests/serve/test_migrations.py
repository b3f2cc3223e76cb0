"""The versioned schema: a version-1 database with data migrates to the current one intact,
on SQLite and PostgreSQL; a newer one is refused."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from amnl.errors import ConfigError
from amnl.serve import db


def test_a_version_1_database_migrates_with_its_data(db_url):
    engine = db.create_db_engine(db_url)
    with engine.begin() as conn:  # what amnl wrote before version 2
        db.MIGRATIONS[1](conn)
        db.set_meta(conn, "schema_version", "1")
        conn.execute(sa.text("INSERT INTO assets (asset_id, created_at, updated_at, first_cycle, "
                             "last_cycle, n_readings, state, predicted_cycle, rul) VALUES "
                             "('e1', 1.0, 2.0, 1, 3, 3, :s, 3, 88.5)"), {"s": b"AMNS"})
        conn.execute(sa.text("INSERT INTO predictions (asset_id, cycle, rul, health, p_healthy, "
                             "p_degrading, p_critical, model_id, predicted_at) VALUES "
                             "('e1', 3, 88.5, 'healthy', 0.9, 0.1, 0.0, 'm', 2.0)"))
    assert db.migrate(engine) == 1
    with engine.connect() as conn:
        assert db.schema_version(conn) == db.SCHEMA_VERSION == 3
        row = conn.execute(sa.select(db.assets)).mappings().one()
        assert (row["rul"], row["rul_lower"], row["failure_cycle"]) == (88.5, None, None)
        pred = conn.execute(sa.select(db.predictions)).mappings().one()
        assert pred["rul"] == 88.5 and pred["rul_upper"] is None
        assert sa.inspect(conn).has_table("alerts")
    assert db.migrate(engine) == 3  # idempotent
    with engine.begin() as conn:
        db.set_meta(conn, "schema_version", "9")
    with pytest.raises(ConfigError, match="newer than this amnl"):
        db.migrate(engine)
    engine.dispose()
