"""``amnl score --on ray`` on a local Ray instance (started and stopped here): the same
predictions as ``--on local``."""

from __future__ import annotations

import numpy as np
import pytest

from amnl.config import InferenceConfig
from amnl.data.cmapss import COLUMNS, load_subset
from amnl.inference.predictor import Predictor
from amnl.score.histories import iter_fleet
from amnl.score.local import score_local
from amnl.score.on_ray import score_ray
from amnl.score.output import PartitionedWriter

ray = pytest.importorskip("ray")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def by_asset_cycle(table: dict) -> dict:
    order = np.lexsort((np.asarray(table["cycle"]), np.asarray(table["asset"])))
    return {k: [v[i] for i in order] if k == "warnings" else np.asarray(v)[order]
            for k, v in table.items()}


@pytest.mark.needs_data
@pytest.mark.slow
@pytest.mark.parametrize("name,fmt,cycles", [("FD001", "text", "all"), ("FD002", "parquet", "all"),
                                             ("FD003", "text", "last"), ("FD004", "text", "last")])
def test_ray_writes_what_local_writes(local_ray, exported, cmapss_dir, tmp_path, name, fmt,
                                      cycles):
    model = exported(name)  # an exported folder: no torch in the actors
    inference = InferenceConfig(runtime="onnx", threads=1)
    src = cmapss_dir / f"test_{name}.txt"
    if fmt == "parquet":  # the first 40 engines, named
        test = load_subset(cmapss_dir, name, train=False).test
        keep = test.unit <= 40
        cols = {c: test.values[keep, i] for i, c in enumerate(COLUMNS) if c != "unit"}
        src = tmp_path / "fleet"
        src.mkdir()
        pq.write_table(pa.table({"unit": [f"u{int(u)}" for u in test.unit[keep]], **cols}),
                       src / "part-0.parquet")
    writer = PartitionedWriter(tmp_path / "ray")
    rows = score_ray(str(model), inference, src, writer, cycles, actors=1)
    writer.commit({})
    got = by_asset_cycle(pq.read_table(tmp_path / "ray").to_pydict())

    predictor = Predictor.load(model, inference)
    required = ["setting_1", "setting_2", "setting_3", *predictor.preprocessor.feature_names]
    parts = list(score_local(predictor, iter_fleet(src, required), cycles))
    want = by_asset_cycle({k: [w for p in parts for w in p[k]] if k == "warnings"
                           else np.concatenate([p[k] for p in parts]) for k in parts[0]})
    assert rows == len(want["rul"])
    assert (got["asset"] == want["asset"]).all() and (got["cycle"] == want["cycle"]).all()
    np.testing.assert_allclose(got["rul"], want["rul"], atol=1e-3)
    np.testing.assert_allclose(got["rul_upper"], want["rul_upper"], atol=1e-3)
    assert (got["health"] == want["health"]).all()
    assert got["warnings"] == want["warnings"]


@pytest.mark.needs_data
def test_ray_refuses_what_local_refuses_in_one_line(local_ray, exported, cmapss_dir, tmp_path):
    from typer.testing import CliRunner

    from amnl.cli.app import app
    from .test_score import fleet_parquet

    def repeat(cols, rows_of):
        r = rows_of(33)[10]
        cols["cycle"][r] = cols["cycle"][r - 1]

    def huge(cols, rows_of):
        cols["s_2"][rows_of(34)[20]] = 1e308

    def no_s_4(cols, rows_of):
        del cols["s_4"]

    model = str(exported("FD001"))
    for edit, want in [(repeat, "asset 33: cycle 10 repeated"),
                       (huge, "asset 34 cycle 21: s_2 (1e+308) is not finite once scaled"),
                       (no_s_4, "missing column(s) s_4")]:
        src = fleet_parquet(cmapss_dir, tmp_path / f"{edit.__name__}.parquet", edit=edit)
        out = CliRunner().invoke(app, ["score", "-i", str(src), "-o", str(tmp_path / "out"),
                                       "--on", "ray", "--actors", "1", "--model", model])
        assert out.exit_code == 2, out.output
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and want in lines[0] and "unit" not in lines[0], out.stderr
        assert not list(tmp_path.glob("out*"))


@pytest.mark.needs_data
def test_ray_streams_its_output_into_few_parts(local_ray, exported, cmapss_dir, tmp_path,
                                               monkeypatch):
    from .test_score import celsius_and_kpa, fleet_parquet

    # write_parquet materialises only its own Write operator (the files' statistics); a
    # materialize() of the scored dataset would hold the whole output in the object store
    materialized, materialize = [], ray.data.Dataset.materialize

    def recording(self, *args, **kwargs):
        materialized.append(type(self._logical_plan.dag).__name__)
        return materialize(self, *args, **kwargs)

    monkeypatch.setattr(ray.data.Dataset, "materialize", recording)
    src = fleet_parquet(cmapss_dir, tmp_path / "fleet.parquet", units=range(1, 21),
                        edit=celsius_and_kpa(7))
    model = exported("FD001")
    inference = InferenceConfig(runtime="onnx", threads=1)
    writer = PartitionedWriter(tmp_path / "ray")
    rows = score_ray(str(model), inference, src, writer, "all", actors=1)
    writer.commit({})
    # the same warnings as locally, row by row (engine 7 in wrong units)
    got = by_asset_cycle(pq.read_table(tmp_path / "ray").to_pydict())
    predictor = Predictor.load(model, inference)
    required = ["setting_1", "setting_2", "setting_3", *predictor.preprocessor.feature_names]
    parts = list(score_local(predictor, iter_fleet(src, required), "all"))
    want = by_asset_cycle({"asset": np.concatenate([p["asset"] for p in parts]),
                           "cycle": np.concatenate([p["cycle"] for p in parts]),
                           "warnings": [w for p in parts for w in p["warnings"]]})
    assert (got["asset"] == want["asset"]).all() and got["warnings"] == want["warnings"]
    assert {a for a, w in zip(got["asset"], got["warnings"]) if any("beyond" in x for x in w)
            } == {"7"}
    assert rows == pq.read_table(src).num_rows  # every cycle of 20 engines: 2,435 rows
    assert materialized == ["Write"]
    assert writer.parts == 1 == len(list((tmp_path / "ray").glob("*.parquet")))
