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


def fleet_parquet(cmapss_dir, path, units=range(31, 37), edit=None):
    """Engines ``units`` of test_FD001 as a Parquet file whose assets are named by their
    number (``"31"``...), so an asset's place in a piece (1, 2, ...) differs from its name;
    ``edit(cols, rows_of)`` changes the columns first."""
    test = load_subset(cmapss_dir, "FD001", train=False).test
    keep = np.isin(test.unit, list(units))
    cols = {c: test.values[keep, i].copy() for i, c in enumerate(COLUMNS) if c != "unit"}
    cols["cycle"] = cols["cycle"].astype(np.int64)
    unit = test.unit[keep]
    if edit is not None:
        edit(cols, lambda u: np.flatnonzero(unit == u))
    pq.write_table(pa.table({"asset": [str(u) for u in unit], **cols}), path)
    return path


def score_fails(*args) -> str:
    """stderr of a failing ``amnl score``, after checking it is one line, exit 2, no output."""
    out = runner.invoke(app, ["score", *map(str, args)])
    assert out.exit_code == 2, out.output
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    return lines[0]


@pytest.mark.needs_data
def test_errors_name_the_asset_not_its_place(cmapss_dir, tmp_path):
    def repeat(cols, rows_of):  # asset 33's 10th cycle given twice (its 11th missing)
        r = rows_of(33)[10]
        cols["cycle"][r] = cols["cycle"][r - 1]

    def huge(cols, rows_of):
        cols["s_2"][rows_of(34)[20]] = 1e308

    def gap(cols, rows_of):
        r = rows_of(35)
        cols["cycle"][r[5]:r[-1] + 1] += 2

    for edit, want in [(repeat, "asset 33: cycle 10 repeated"),
                       (huge, "asset 34 cycle 21: s_2 (1e+308) is not finite once scaled"),
                       (gap, "asset 35: cycle 8 follows cycle 5: 2 missing")]:
        src = fleet_parquet(cmapss_dir, tmp_path / f"{edit.__name__}.parquet", edit=edit)
        line = score_fails("-i", src, "-o", tmp_path / "out")
        assert want in line and "unit" not in line, line
        assert not list(tmp_path.glob("out*"))


@pytest.mark.needs_data
def test_parquet_columns_that_are_not_numbers_are_named(cmapss_dir, tmp_path):
    """A string or boolean sensor column, or a folder whose second file lacks a column: one
    line naming the file and the column (a traceback, or a silent cast, before)."""
    def as_text(cols, _rows_of):
        cols["s_2"] = np.array([f"{v:.2f}" for v in cols["s_2"]])

    def as_bool(cols, _rows_of):
        cols["s_3"] = cols["s_3"] > 1590

    for edit, want in [(as_text, "column s_2 holds string, not numbers"),
                       (as_bool, "column s_3 holds bool, not numbers")]:
        src = fleet_parquet(cmapss_dir, tmp_path / f"{edit.__name__}.parquet", edit=edit)
        line = score_fails("-i", src, "-o", tmp_path / "out")
        assert want in line and src.name in line, line
    folder = tmp_path / "fleet"
    folder.mkdir()
    fleet_parquet(cmapss_dir, folder / "a.parquet", units=[31])
    second = fleet_parquet(cmapss_dir, folder / "b.parquet", units=[32])
    pq.write_table(pq.read_table(second).drop(["s_4"]), second)
    line = score_fails("-i", folder, "-o", tmp_path / "out")
    assert "b.parquet" in line and "column s_4 is missing" in line, line
    assert not list(tmp_path.glob("out*"))


def test_a_null_reading_is_named(tmp_path):
    from amnl.score.histories import check_assets

    values = np.zeros((4, len(COLUMNS)))
    values[:, 0], values[:, 1] = [1, 1, 2, 2], [7, 8, 1, 2]
    values[3, COLUMNS.index("s_3")] = np.nan
    with pytest.raises(DataError, match=r"asset b cycle 2: s_3 is missing \(null or NaN\)"):
        check_assets(values, ["a", "b"], "f", ["s_2", "s_3"])
    values[3, COLUMNS.index("s_3")] = 0.0
    check_assets(values, ["a", "b"], "f", ["s_2", "s_3"])  # a history may start at cycle 7


def test_a_running_process_keeps_its_partial_folder_a_dead_one_loses_it(tmp_path):
    import subprocess
    import sys

    from amnl.score.output import _host

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        theirs = tmp_path / f"out.partial-{_host()}-{other.pid}"
        (theirs / "x").mkdir(parents=True)
        elsewhere = tmp_path / f"out.partial-otherhost-{other.pid + 1}"
        elsewhere.mkdir()
        PartitionedWriter(tmp_path / "out").abort()
        assert theirs.exists() and elsewhere.exists()  # alive here; another host's
    finally:
        other.kill()
        other.wait()
    w = PartitionedWriter(tmp_path / "out")
    assert not theirs.exists() and elsewhere.exists()
    w.abort()


def test_many_pieces_make_few_parts(tmp_path):
    w = PartitionedWriter(tmp_path / "out")
    for i in range(50):  # 50 pieces of 1,000 rows: one part (PART_ROWS is 250,000)
        w.write({"asset": np.array([f"a{i}"] * 1000, dtype=object),
                 "cycle": np.arange(1, 1001), "rul": np.ones(1000, np.float32)})
    w.commit({})
    assert w.parts == 1 and w.rows == 50_000
    assert pq.read_table(tmp_path / "out").num_rows == 50_000


def celsius_and_kpa(unit):
    """An ``edit`` for :func:`fleet_parquet`: engine ``unit``'s temperatures in degrees Celsius
    (C-MAPSS gives degrees Rankine) and its HPC outlet pressure in kPa (psia)."""
    def edit(cols, rows_of):
        r = rows_of(unit)
        for s in ("s_2", "s_3", "s_4"):
            cols[s][r] = (cols[s][r] - 491.67) * 5 / 9
        cols["s_7"][r] *= 6.894757
    return edit


@pytest.mark.needs_data
def test_an_asset_in_wrong_units_is_warned_and_only_it(cmapss_dir, tmp_path, onnx_fd001):
    src = fleet_parquet(cmapss_dir, tmp_path / "fleet.parquet", edit=celsius_and_kpa(33))
    window = onnx_fd001.window
    for cycles in ("last", "all"):
        out = runner.invoke(app, ["score", "-i", str(src), "-o", str(tmp_path / cycles),
                                  "--cycles", cycles])
        assert out.exit_code == 0, out.output
        assert "1 of 6 assets have input warnings; see the warnings column" in out.stderr
        got = read_output(tmp_path / cycles)
        assert str(pq.read_schema(next((tmp_path / cycles).glob("*.parquet"))).field(
            "warnings").type) == "list<element: string>"
        for asset, cycle, warnings in zip(got["asset"], got["cycle"], got["warnings"]):
            if asset == "33":
                assert any("sensors beyond" in w for w in warnings), (cycle, warnings)
            elif cycle >= window:
                assert warnings == [], (asset, cycle, warnings)
            else:  # the history up to this row is shorter than the window: that row's only
                assert len(warnings) == 1 and f"{cycle} of {window} cycles" in warnings[0]
        meta = json.loads((tmp_path / cycles / SUCCESS_FILE).read_text())
        assert (meta["assets"], meta["assets_with_warnings"]) == (6, 1)


def test_warned_assets_counts_an_asset_across_row_groups_from_its_window_on(tmp_path):
    from amnl.score.output import warned_assets

    asset = ["a"] * 40 + ["b"] * 40
    warnings = [[] for _ in asset]
    warnings[35] = ["x"]  # a: its 36th row
    for i in range(40, 69):  # b: only its first 29 rows (the short-history warning)
        warnings[i] = ["short"]
    table = pa.table({"asset": asset, "warnings": pa.array(warnings, pa.list_(pa.string()))})
    pq.write_table(table, tmp_path / "part-00000.parquet", row_group_size=16)
    assert warned_assets(tmp_path, from_row=30) == (1, 2)
    assert warned_assets(tmp_path) == (2, 2)
