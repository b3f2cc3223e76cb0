"""Inputs the model cannot answer are rejected; inputs outside its training range are flagged."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from amnl import Predictor
from amnl.cli.app import app
from amnl.data.cmapss import (
    COLUMNS,
    EngineTable,
    in_celsius_and_kpa,
    read_histories,
    read_table,
)
from amnl.errors import DataError
from amnl.inference.checks import LONGEST_TRAINING_ENGINE, Z_LIMIT

runner = CliRunner()


def _csv(path, values, header=COLUMNS):
    path.write_text(",".join(header) + "\n" + "\n".join(",".join(f"{v:.17g}" for v in row)
                                                         for row in values) + "\n")
    return path


def test_readers_reject_duplicate_columns_and_cycles_below_one(tmp_path):
    values = np.loadtxt(_table_path(tmp_path))
    header = list(COLUMNS)
    header[-1] = "s_2"  # s_21 renamed: s_2 twice
    with pytest.raises(DataError, match=r"dup.csv:1:col 26: column 's_2' appears twice"):
        read_histories(_csv(tmp_path / "dup.csv", values, header))
    shifted = values.copy()
    shifted[:, 1] -= 1  # cycles 0, 1, 2...
    with pytest.raises(DataError, match=r"zero.csv:2:col 2: cycle 0 of unit 1: cycles count from 1"):
        read_histories(_csv(tmp_path / "zero.csv", shifted))


def _table_path(tmp_path):
    from amnl.data.synthetic import write_fleet

    return write_fleet(tmp_path / "fleet", "FD001", n_train=2, n_test=2, seed=0)["test"]


@pytest.mark.needs_data
def test_what_the_model_never_saw_is_flagged_and_what_it_did_is_not(cmapss_dir):
    p = Predictor.load("FD001")
    own = p.predict_table(read_table(cmapss_dir / "test_FD001.txt"))
    assert own.n_flagged == 0
    other = p.predict_table(read_table(cmapss_dir / "test_FD002.txt"))
    assert other.n_flagged == len(other.unit)  # six operating conditions, one of them FD001's
    assert all(any("far from every training condition" in w for w in ws) for ws in other.warnings)
    table = read_table(cmapss_dir / "test_FD001.txt")
    older = table.values.copy()
    older[:, 1] += 1000
    aged = p.predict_table(EngineTable(table.path, older))
    oldest = max(LONGEST_TRAINING_ENGINE["FD001"], LONGEST_TRAINING_ENGINE["FD003"])  # pooled
    assert all(any(f"beyond the longest training engine ({oldest} cycles)" in w for w in ws)
               for ws in aged.warnings)
    for name in ("FD002", "FD003", "FD004"):  # every bundled model on its own test file: clean
        table = read_table(cmapss_dir / f"test_{name}.txt")  # but for the units too short
        own = Predictor.load(name).predict_table(table)
        short = table.lengths < p.window
        assert [bool(w) for w in own.warnings] == list(short), name
        assert all(w == [SHORT.format(n)] for w, n in zip(own.warnings, table.lengths)
                   if n < p.window)


@pytest.mark.needs_data
def test_cli_rejects_a_huge_value_and_flags_far_readings(cmapss_dir, tmp_path):
    lines = (cmapss_dir / "test_FD001.txt").read_text().splitlines()[:40]
    cells = lines[5].split()
    cells[6] = "1e308"  # s_2 of unit 1, cycle 6
    bad = tmp_path / "huge.txt"
    bad.write_text("\n".join([*lines[:5], " ".join(cells), *lines[6:]]) + "\n")
    res = runner.invoke(app, ["predict", "--input", str(bad)])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "unit 1 cycle 6: s_2 (1e+308) is not finite once scaled" in res.stderr
    values = np.loadtxt(cmapss_dir / "test_FD001.txt")[:60]
    values[:, 6] += 40 * values[:, 6].std() + 5.0  # s_2 far above anything seen
    res = runner.invoke(app, ["predict", "--input", str(_csv(tmp_path / "far.csv", values)),
                              "--format", "json"])
    assert res.exit_code == 0, res.output
    records = json.loads(res.stdout)
    assert all(any(f"beyond {Z_LIMIT:g} training standard deviations" in w
                   for w in r["warnings"]) for r in records)
    assert f"{len(records)} of {len(records)} units are outside the model's training range" in res.stderr
    res = runner.invoke(app, ["predict", "--input", str(tmp_path / "far.csv"), "--format", "csv"])
    assert res.exit_code == 0 and res.stdout.splitlines()[0].endswith(",warnings")


BEYOND = f"sensors beyond {Z_LIMIT:g} training standard deviations"


def bad_inputs(rows: np.ndarray) -> dict[str, np.ndarray]:
    """One engine's rows (C-MAPSS columns) as a user might send them wrongly, by name."""
    celsius = in_celsius_and_kpa(rows)
    typo = rows.copy()
    typo[len(rows) // 2, COLUMNS.index("s_2")] = 64300.0  # about 643
    late = rows.copy()
    late[:, 1] += 4999  # a first reading at cycle 5000
    return {"celsius": celsius, "typo": typo, "late": late,
            "mid_life": rows[-40:], "three_cycles": rows[:3]}


def _fleet(named: dict[str, np.ndarray]) -> np.ndarray:
    """The engines as units 1, 2, ... of one file."""
    parts = []
    for i, rows in enumerate(named.values()):
        rows = rows.copy()
        rows[:, 0] = i + 1
        parts.append(rows)
    return np.concatenate(parts)


@pytest.fixture(scope="module")
def engine31(cmapss_dir):
    """FD001's test engine 31: 196 cycles from cycle 1, clean (true RUL 8)."""
    values = np.loadtxt(cmapss_dir / "test_FD001.txt")
    return values[values[:, 0] == 31]


@pytest.mark.needs_data
def test_predict_warns_on_wrong_units_a_typo_a_late_or_short_history_not_on_clean_data(
        engine31, tmp_path):
    named = {"clean": engine31, **bad_inputs(engine31)}
    res = runner.invoke(app, ["predict", "--input", str(_csv(tmp_path / "f.csv", _fleet(named))),
                              "--format", "json"])
    assert res.exit_code == 0, res.output
    got = dict(zip(named, (r["warnings"] for r in json.loads(res.stdout))))
    assert got["clean"] == []
    assert BEYOND in got["celsius"][0] and "(s_2, s_3, s_4)" in got["celsius"][0]
    assert got["typo"] == [f"{BEYOND} in 1 of {len(engine31)} cycles (s_2)"]
    assert any("age 5195 cycles, beyond the longest training engine" in w for w in got["late"])
    assert any(MID_LIFE.format(5000) in w for w in got["late"])
    assert [w for w in got["mid_life"] if MID_LIFE.format(157) in w]  # 196 - 40 + 1
    assert got["three_cycles"] == [SHORT.format(3)]
    assert f"{len(named) - 1} of {len(named)} units are outside" in res.stderr


MID_LIFE = "history starts at cycle {}, not 1: the model needs each asset's history from its first"
SHORT = ("history shorter than the model's window: {} of 30 cycles, padded with its first "
         "cycle, it looks younger and healthier than it may be")


@pytest.mark.needs_data
def test_batch_checks_of_every_cycle_equal_the_streaming_checks(engine31):
    """``amnl score --cycles all`` (windows_warnings) and the service (StreamChecks, the flags
    kept in the asset's state) give every cycle the same warnings."""
    from amnl.features.online import OnlineFeatures
    from amnl.inference.checks import StreamChecks, windows_warnings

    p = Predictor.load("FD001")
    pre = p.preprocessor
    named = bad_inputs(engine31)
    table = EngineTable("fleet", _fleet({"clean": engine31, **named}))
    cond, scaled = pre.scale(table)
    batch = windows_warnings(pre, p.config, table, cond, scaled,
                             pre.windows(table, first_end=0, scaled=scaled))
    online, checks = OnlineFeatures(pre), StreamChecks(pre, p.config)
    streamed = []
    for s, n in zip(table.starts, table.lengths):
        state = online.new_state()
        for r in table.values[s: s + n]:
            before = online.recent_flags(state)
            window, c, z = online.step(state, r[1:2].astype(np.int64), r[None, 2:])
            flags = checks.flags(r[None, 2:5], c, z)
            online.record_flags(state, flags)
            state = type(state).from_bytes(state.to_bytes())  # a restart keeps the flags
            seen = np.concatenate([before, flags])[-p.window:]
            streamed.append(checks.warnings(seen, int(r[1]), window[0],
                                            int(table.values[s, 1])))
    assert streamed == batch
    assert sum(map(bool, batch)) > len(engine31) * 3  # most of the bad engines' cycles
    assert not any(batch[p.window - 1: len(engine31)])  # the clean engine from a full window


@pytest.mark.needs_data
def test_no_output_claims_a_coverage_it_has_not_measured(cmapss_dir, tmp_path):
    """The calibration's level is printed as nominal; a measured coverage says where it was
    measured (#26 item 7)."""
    res = runner.invoke(app, ["evaluate", "--dataset", "FD001", "--data-dir", str(cmapss_dir)])
    assert res.exit_code == 0, res.output
    line = next(x for x in res.stdout.splitlines() if "interval" in x)
    assert "RUL interval, nominal 80 %: coverage" in line, line
    assert "% measured on these 100 engines' last windows" in line
    assert "80% RUL interval" not in res.stdout
    values = np.loadtxt(cmapss_dir / "test_FD001.txt")[:40]
    res = runner.invoke(app, ["predict", "--input", str(_csv(tmp_path / "a.csv", values))])
    record = json.loads(res.stdout)[0]
    assert record["nominal_coverage"] == 0.8 and "coverage" not in record


@pytest.mark.needs_data
def test_evaluate_lists_each_test_engines_warnings(cmapss_dir, tmp_path):
    """FD002's test file has engines shorter than the window: evaluate says so and its
    predictions.csv names them; FD001's has none, and evaluate says nothing."""
    import csv

    table = read_table(cmapss_dir / "test_FD002.txt")
    short = table.units[table.lengths < 30]
    res = runner.invoke(app, ["evaluate", "--dataset", "FD002", "--weights", "FD002",
                              "--data-dir", str(cmapss_dir), "--out", str(tmp_path / "ev")])
    assert res.exit_code == 0, res.output
    assert f"{len(short)} of {len(table.units)} test engines have input warnings" in res.stderr
    with open(tmp_path / "ev" / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["unit"]) for r in rows if r["warnings"]] == short.tolist()
    assert all(r["warnings"].startswith("history shorter than the model's window")
               for r in rows if r["warnings"])
    res = runner.invoke(app, ["evaluate", "--dataset", "FD001", "--data-dir", str(cmapss_dir)])
    assert res.exit_code == 0 and "input warnings" not in res.stderr


@pytest.mark.needs_data
@pytest.mark.parametrize("cycles", ["last", "all"])
def test_score_warns_as_predict_and_the_service_do(engine31, tmp_path, cycles):
    """``amnl score``'s warnings column: --cycles last as amnl predict checks each unit,
    --cycles all each row as the service checks each prediction."""
    pq = pytest.importorskip("pyarrow.parquet")
    from amnl.inference.checks import windows_warnings

    named = {"clean": engine31, **bad_inputs(engine31)}
    values = _fleet(named)
    src = _csv(tmp_path / "fleet.csv", values)
    res = runner.invoke(app, ["score", "-i", str(src), "-o", str(tmp_path / "out"),
                              "--runtime", "torch", "--cycles", cycles])
    assert res.exit_code == 0, res.output
    got = pq.read_table(tmp_path / "out").to_pydict()
    p = Predictor.load("FD001")
    pre = p.preprocessor
    table = EngineTable(str(src), values)
    cond, scaled = pre.scale(table)
    if cycles == "last":
        want = p.predict_table(table).warnings
    else:
        want = windows_warnings(pre, p.config, table, cond, scaled,
                                pre.windows(table, first_end=0, scaled=scaled))
    assert [list(w) for w in got["warnings"]] == want
    by_asset = {}
    for a, c, w in zip(got["asset"], got["cycle"], got["warnings"]):
        by_asset.setdefault(names_of(named)[a], []).append((c, list(w)))
    assert all(not w for c, w in by_asset["clean"] if c >= p.window)  # can fail: the rest do
    for name in ("celsius", "late", "mid_life", "three_cycles"):
        assert all(w for _, w in by_asset[name]), name
    typo = len(engine31) // 2 + 1  # its cycle
    assert [c for c, w in by_asset["typo"] if any(x.endswith("(s_2)") for x in w)] == (
        [len(engine31)] if cycles == "last" else list(range(typo, typo + p.window)))


def names_of(named: dict) -> dict[str, str]:
    """Score's asset names ("1", "2", ...) of the engines of :func:`_fleet`."""
    return {str(i + 1): name for i, name in enumerate(named)}
