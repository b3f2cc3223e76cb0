"""``amnl score`` on real C-MAPSS files: parity with ``amnl predict`` and with the cut
histories, Parquet in and out, atomic output, bounded pieces."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from amnl.cli.app import app
from amnl.config import InferenceConfig
from amnl.data.cmapss import COLUMNS, EngineTable, iter_histories, load_subset
from amnl.errors import ConfigError, DataError
from amnl.inference.predictor import Predictor
from amnl.score.histories import iter_fleet
from amnl.score.local import score_local
from amnl.score.output import SUCCESS_FILE, PartitionedWriter

pq = pytest.importorskip("pyarrow.parquet")
pa = pytest.importorskip("pyarrow")
runner = CliRunner()


@pytest.fixture(scope="module")
def onnx_fd001():
    return Predictor.load("FD001", InferenceConfig(runtime="onnx", threads=1))


def read_output(folder) -> dict:
    table = pq.read_table(folder).to_pydict()
    return table


def score_cli(*args) -> None:
    out = runner.invoke(app, ["score", *map(str, args)])
    assert out.exit_code == 0, out.output


@pytest.mark.needs_data
@pytest.mark.parametrize("name", ["FD001", "FD002", "FD003", "FD004"])
def test_last_cycles_equal_amnl_predict(cmapss_dir, tmp_path, name):
    src = cmapss_dir / f"test_{name}.txt"
    score_cli("-i", src, "-o", tmp_path / "out", "--model", name, "--cycles", "last")
    got = read_output(tmp_path / "out")
    p = Predictor.load(name, InferenceConfig(runtime="onnx"))
    want = p.predict_tables(iter_histories(src, p.preprocessor.feature_names))
    assert got["asset"] == [str(u) for u in want.unit]
    np.testing.assert_allclose(got["rul"], want.rul, atol=1e-3)
    np.testing.assert_allclose(got["rul_lower"], want.rul_lower, atol=1e-3)
    assert got["health"] == want.health and set(got["model_id"]) == {p.model_id}
    meta = json.loads((tmp_path / "out" / SUCCESS_FILE).read_text())
    assert meta["rows"] == len(want.unit)


@pytest.mark.needs_data
def test_every_cycle_equals_predict_on_the_cut_history(cmapss_dir, onnx_fd001):
    test = load_subset(cmapss_dir, "FD001", train=False).test
    rows = test.values[np.isin(test.unit, [1, 2, 3])]
    piece = (EngineTable("t", rows), ["1", "2", "3"])
    (scored,) = list(score_local(onnx_fd001, iter([piece]), "all"))
    assert len(scored["rul"]) == len(rows)
    for i in range(0, len(rows), 7):  # the definition, one cut history at a time
        u, c = int(rows[i, 0]), int(rows[i, 1])
        cut = rows[(rows[:, 0] == u) & (rows[:, 1] <= c)]
        want = onnx_fd001.predict_table(EngineTable("cut", cut)).rul[0]
        assert abs(scored["rul"][i] - want) <= 1e-3
        assert scored["asset"][i] == str(u) and scored["cycle"][i] == c


@pytest.mark.needs_data
def test_parquet_in_with_named_assets_gives_the_text_results(cmapss_dir, tmp_path, onnx_fd001):
    test = load_subset(cmapss_dir, "FD001", train=False).test
    cols = {c: test.values[:, i] for i, c in enumerate(COLUMNS) if c != "unit"}
    cols["cycle"] = cols["cycle"].astype(np.int64)
    asset = np.array([f"engine-{int(u):03d}" for u in test.unit])
    pq.write_table(pa.table({"asset": asset, **cols}), tmp_path / "fleet.parquet",
                   row_group_size=5000)
    score_cli("-i", tmp_path / "fleet.parquet", "-o", tmp_path / "a", "--cycles", "all")
    score_cli("-i", cmapss_dir / "test_FD001.txt", "-o", tmp_path / "b", "--cycles", "all")
    a, b = read_output(tmp_path / "a"), read_output(tmp_path / "b")
    assert a["asset"] == [f"engine-{int(u):03d}" for u in map(int, b["asset"])]
    np.testing.assert_allclose(a["rul"], b["rul"], atol=1e-3)

    # small pieces: the same answer from many parts
    small = list(iter_fleet(tmp_path / "fleet.parquet", [], chunk_rows=1000))
    assert len(small) > 10 and all(len(t) <= 1000 + 400 for t, _ in small)
    names = [n for _, ns in small for n in ns]
    assert names == sorted(set(names))


def test_assets_out_of_order_and_missing_columns_are_named(tmp_path):
    table = pa.table({"asset": ["a", "a", "b", "a"], "cycle": [1, 2, 1, 3],
                      "setting_1": [0.0] * 4})
    pq.write_table(table, tmp_path / "x.parquet")
    with pytest.raises(DataError, match="asset a appears again"):
        list(iter_fleet(tmp_path / "x.parquet", []))
    with pytest.raises(DataError, match="missing column.*s_2"):
        list(iter_fleet(tmp_path / "x.parquet", ["s_2"]))


@pytest.mark.needs_data
def test_a_failed_run_leaves_no_output_and_an_existing_one_is_kept(cmapss_dir, tmp_path):
    lines = (cmapss_dir / "test_FD001.txt").read_text().splitlines()
    bad = lines[:9000] + [lines[9000].replace(lines[9000].split()[6], "1e308", 1)] + lines[9001:]
    (tmp_path / "bad.txt").write_text("\n".join(bad) + "\n")
    out = runner.invoke(app, ["score", "-i", str(tmp_path / "bad.txt"), "-o",
                              str(tmp_path / "out")])
    assert out.exit_code == 2 and "not finite" in out.stderr
    assert not list(tmp_path.glob("out*"))  # neither the folder nor a .partial one
    (tmp_path / "out").mkdir()
    out = runner.invoke(app, ["score", "-i", str(cmapss_dir / "test_FD001.txt"), "-o",
                              str(tmp_path / "out")])
    assert out.exit_code == 2 and "exists" in out.stderr
    with pytest.raises(ConfigError):
        PartitionedWriter(tmp_path / "out")


def test_parts_written_before_a_failure_are_not_published(tmp_path):
    w = PartitionedWriter(tmp_path / "out")
    w.write({"asset": np.array(["a"], dtype=object), "cycle": np.array([1]),
             "rul": np.array([1.0], np.float32)})
    assert w.parts == 1 and not (tmp_path / "out").exists()
    w.abort()
    assert not list(tmp_path.iterdir())
    w = PartitionedWriter(tmp_path / "out")
    w.write({"asset": np.array(["a"], dtype=object), "cycle": np.array([1]),
             "rul": np.array([1.0], np.float32)})
    w.commit({"model_id": "m"})
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [SUCCESS_FILE,
                                                                    "part-00000.parquet"]
