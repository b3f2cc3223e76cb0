"""Fixtures of the service tests: exported models, both databases, a real server on loopback.

Every test that takes ``db_url`` runs on SQLite and on PostgreSQL. PostgreSQL comes from
``$AMNL_TEST_POSTGRES_URL`` (``.ci/run`` starts a throwaway cluster and sets it), else a cluster
this session starts in a temporary folder (Debian's package); without one those tests skip,
except under ``CI=true`` where that is a failure.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("onnxruntime")

from amnl.config import InferenceConfig
from amnl.data.cmapss import COLUMNS
from amnl.inference.predictor import Predictor

from . import pg

PG_ENV = "AMNL_TEST_POSTGRES_URL"


def reading(row: np.ndarray) -> dict:
    """A C-MAPSS row (unit, cycle, settings, sensors) as the API's reading."""
    return {"cycle": int(row[1]), **{c: float(v) for c, v in zip(COLUMNS[2:], row[2:])}}


@pytest.fixture(scope="session")
def predictor(exported):
    """``predictor(name)``: one loaded ONNX FP32 predictor per model, shared (thread-safe)."""
    loaded: dict[str, Predictor] = {}

    def get(name: str = "FD001") -> Predictor:
        if name not in loaded:
            loaded[name] = Predictor.load(exported(name), InferenceConfig(runtime="onnx",
                                                                          threads=1))
        return loaded[name]

    return get


@pytest.fixture(scope="session")
def postgres_server():
    """URL of a PostgreSQL server for the session (see the module docstring)."""
    if os.environ.get(PG_ENV):
        yield os.environ[PG_ENV]
        return
    # not under pytest's folders: those are private to root, and the server runs as postgres
    folder = Path(tempfile.mkdtemp(prefix="amnl-test-postgres-"))
    try:
        url = pg.start(folder)
    except (RuntimeError, OSError) as exc:
        reason = f"no PostgreSQL server could be started: {exc}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    yield url
    pg.stop(folder)
    shutil.rmtree(folder, ignore_errors=True)


def fresh_postgres_db(server_url: str) -> str:
    """A new, empty database on the server; its URL."""
    import sqlalchemy as sa

    name = f"amnl_test_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return server_url.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """A fresh database of each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'amnl.db'}"
    return fresh_postgres_db(request.getfixturevalue("postgres_server"))


class LiveServer:
    """A real uvicorn server on a loopback port, in a thread of the test process."""

    def __init__(self, app) -> None:
        import uvicorn

        self.app = app
        self.port = pg.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_level="warning", access_log=False))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def service(self):
        return self.app.state.service

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture
def live_server(predictor):
    """``live_server(settings, model="FD001")``: a started server (stopped after the test)."""
    from amnl.serve.app import create_app

    started: list[LiveServer] = []

    def start(settings, model: str = "FD001") -> LiveServer:
        server = LiveServer(create_app(settings, predictor(model))).__enter__()
        started.append(server)
        return server

    yield start
    for s in started:
        s.__exit__()
