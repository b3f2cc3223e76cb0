"""The service's prediction at every cycle equals ``amnl predict`` on the history cut there."""

from __future__ import annotations

import json
import random
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from amnl.config import InferenceConfig
from amnl.data.cmapss import COLUMNS, EngineTable, load_subset
from amnl.inference.predictor import Predictor
from amnl.serve.settings import ServeSettings

from .conftest import reading

#: Largest |service - amnl predict| RUL allowed, cycles (the issue's bound).
TOLERANCE = 1e-3


def stream_engines(url: str, engines: dict[str, np.ndarray], seed: int = 0) -> None:
    """Post each engine's cycles in order, in random chunks of 1-9, four assets at a time."""
    def one(item):
        asset, rows = item
        rng = random.Random(f"{seed}-{asset}")
        with httpx.Client(base_url=url, timeout=60) as c:
            i = 0
            while i < len(rows):
                n = rng.randint(1, 9)
                r = c.post(f"/v1/assets/{asset}/readings",
                           json={"readings": [reading(x) for x in rows[i: i + n]]})
                assert r.status_code == 200, r.text
                i += n

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, engines.items()))


def offline(predictor: Predictor, rows: np.ndarray) -> np.ndarray:
    """``amnl predict``'s RUL for the history cut at every cycle."""
    return np.array([predictor.predict_table(EngineTable("cut", rows[: k + 1])).rul[0]
                     for k in range(len(rows))])


def check_every_cycle(server, engines, predictor) -> float:
    worst = 0.0
    with httpx.Client(base_url=server.url) as c:
        for asset, rows in engines.items():
            got = c.get(f"/v1/assets/{asset}/predictions").json()["predictions"]
            assert [p["cycle"] for p in got] == [int(r[1]) for r in rows]
            diff = np.abs(np.array([p["rul"] for p in got]) - offline(predictor, rows))
            worst = max(worst, float(diff.max()))
    assert worst <= TOLERANCE
    return worst


def engines_of(cmapss_dir, name: str, units) -> dict[str, np.ndarray]:
    test = load_subset(cmapss_dir, name, train=False).test
    return {f"{name}-{u}": test.values[test.unit == u] for u in units}


@pytest.mark.needs_data
@pytest.mark.slow
@pytest.mark.parametrize("name,units", [("FD001", range(1, 9)), ("FD002", range(1, 5))])
def test_every_cycle_equals_amnl_predict_on_the_cut_history(live_server, db_url, predictor,
                                                             cmapss_dir, name, units):
    engines = engines_of(cmapss_dir, name, units)
    server = live_server(ServeSettings(inference=InferenceConfig(runtime="onnx"), db=db_url,
                                       max_wait_ms=2.0), model=name)
    stream_engines(server.url, engines)
    assert server.service.wait_predicted()
    check_every_cycle(server, engines, predictor(name))


@pytest.mark.needs_data
@pytest.mark.slow
def test_the_torch_runtime_streams_exactly_too(tmp_path, cmapss_dir):
    from amnl.serve.app import create_app

    from .conftest import LiveServer

    p = Predictor.load("FD001", InferenceConfig(runtime="torch", batch_size=64))
    engines = engines_of(cmapss_dir, "FD001", [1, 3, 7])
    with LiveServer(create_app(ServeSettings(inference=p.inference,
                                             db=str(tmp_path / "a.db")), p)) as server:
        stream_engines(server.url, engines, seed=1)
        assert server.service.wait_predicted()
        check_every_cycle(server, engines, p)


@pytest.mark.needs_data
def test_the_cli_gives_the_stored_prediction(live_server, tmp_path, predictor, exported,
                                             cmapss_dir):
    """The literal command on a cut history file, against the service."""
    from amnl.cli.app import app

    rows = engines_of(cmapss_dir, "FD001", [3])["FD001-3"]
    server = live_server(ServeSettings(inference=InferenceConfig(runtime="onnx"),
                                       db=str(tmp_path / "a.db")))
    stream_engines(server.url, {"e3": rows})
    assert server.service.wait_predicted()
    cut = 57
    path = tmp_path / "cut.csv"
    path.write_text(",".join(COLUMNS) + "\n" + "\n".join(
        ",".join(f"{v:g}" if i > 1 else str(int(v)) for i, v in enumerate(r))
        for r in rows[:cut]) + "\n")
    out = CliRunner().invoke(app, ["predict", "--input", str(path), "--run", str(exported()),
                                   "--runtime", "onnx", "--format", "json"])
    assert out.exit_code == 0, out.output
    cli = json.loads(out.stdout)
    cli = cli[0] if isinstance(cli, list) else cli["predictions"][0]
    stored = httpx.get(f"{server.url}/v1/assets/e3/predictions",
                       params={"from_cycle": cut, "to_cycle": cut}).json()["predictions"][0]
    assert abs(stored["rul"] - cli["rul"]) <= TOLERANCE
