"""Inputs the model cannot answer are rejected; inputs outside its training range are flagged."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from amnl import Predictor
from amnl.cli.app import app
from amnl.data.cmapss import COLUMNS, EngineTable, read_histories, read_table
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
        own = Predictor.load(name).predict_table(read_table(cmapss_dir / f"test_{name}.txt"))
        assert own.n_flagged == 0, (name, [w for w in own.warnings if w][:2])


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
    assert all(f"beyond {Z_LIMIT:g} training standard deviations" in r["warnings"][-1]
               for r in records)
    assert f"{len(records)} of {len(records)} units are outside the model's training range" in res.stderr
    res = runner.invoke(app, ["predict", "--input", str(tmp_path / "far.csv"), "--format", "csv"])
    assert res.exit_code == 0 and res.stdout.splitlines()[0].endswith(",warnings")
