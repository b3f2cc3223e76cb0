"""Reading and validating C-MAPSS text files (amnl.data.cmapss), their summary and `data check`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from amnl.cli.data import data_app
from amnl.data.check import FileSummary, summarize
from amnl.data.cmapss import COLUMNS, load_subset, read_rul, read_table
from amnl.data.synthetic import write_fleet
from amnl.errors import DataError

#: Small fleet: 3 training and 2 test engines of 20-30 cycles keep every test fast.
FLEET = {"n_train": 3, "n_test": 2, "min_life": 20, "max_life": 30}


@pytest.fixture
def fleet(tmp_path: Path) -> dict[str, Path]:
    return write_fleet(tmp_path, "FD001", **FLEET)


def _edit(path: Path, change: Callable[[list[str]], list[str]]) -> None:
    """Rewrite ``path`` with ``change`` applied to its lines (newlines kept)."""
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(change(lines)))


def _set_token(line: str, col: int, value: str) -> str:
    tokens = line.split()
    tokens[col - 1] = value
    return " ".join(tokens) + "  \n"


def _unit_starts(path: Path) -> list[int]:
    """0-based line index where each unit begins."""
    units = [line.split()[0] for line in path.read_text().splitlines()]
    return [i for i, u in enumerate(units) if i == 0 or u != units[i - 1]]


def _raises(where: str, *fragments: str, func: Callable[[], object]) -> DataError:
    with pytest.raises(DataError) as info:
        func()
    msg = str(info.value)
    assert where in msg, msg
    for fragment in fragments:
        assert fragment in msg, msg
    return info.value


# --- reading valid files -------------------------------------------------------------------------

def test_read_synthetic_fleet(fleet: dict[str, Path]) -> None:
    train = read_table(fleet["train"])
    assert train.values.shape[1] == len(COLUMNS) == 26
    assert train.units.tolist() == [1, 2, 3]
    assert train.lengths.sum() == len(train) == len(fleet["train"].read_text().splitlines())
    assert np.all(train.cycle[train.starts] == 1)
    subset = load_subset(fleet["train"].parent, "fd001")
    assert subset.test is not None and subset.rul is not None
    assert subset.test.units.tolist() == [1, 2]
    assert subset.rul.dtype == np.int64 and len(subset.rul) == 2 and (subset.rul > 0).all()


def test_trailing_blank_lines_are_ignored(fleet: dict[str, Path]) -> None:
    _edit(fleet["rul"], lambda lines: [*lines, "\n", "  \n"])
    assert len(read_rul(fleet["rul"])) == 2


# --- train/test file errors: file name, line and (where it applies) column ------------------

def test_wrong_column_count(fleet: dict[str, Path]) -> None:
    _edit(fleet["train"], lambda ls: [*ls[:4], " ".join(ls[4].split()[:-1]) + "\n", *ls[5:]])
    err = _raises("train_FD001.txt:5", "expected 26 columns, found 25",
                  func=lambda: read_table(fleet["train"]))
    assert err.line == 5


def test_truncated_last_line(fleet: dict[str, Path]) -> None:
    n = len(fleet["train"].read_text().splitlines())
    _edit(fleet["train"], lambda ls: [*ls[:-1], ls[-1][:40]])  # download cut off mid-row
    _raises(f"train_FD001.txt:{n}", "expected 26 columns", func=lambda: read_table(fleet["train"]))


def test_blank_line_inside_file(fleet: dict[str, Path]) -> None:
    _edit(fleet["test"], lambda ls: [*ls[:2], "\n", *ls[2:]])
    _raises("test_FD001.txt:3", "empty line", func=lambda: read_table(fleet["test"]))


def test_letter_in_number(fleet: dict[str, Path]) -> None:
    _edit(fleet["train"], lambda ls: [*ls[:2], _set_token(ls[2], 7, "64l.5"), *ls[3:]])
    _raises("train_FD001.txt:3:col 7", "'64l.5' is not a number", "s_2",
            func=lambda: read_table(fleet["train"]))


@pytest.mark.parametrize("token", ["nan", "NaN", "inf", "-inf"])
def test_nan_and_inf(fleet: dict[str, Path], token: str) -> None:
    _edit(fleet["train"], lambda ls: [*ls[:3], _set_token(ls[3], 10, token), *ls[4:]])
    _raises("train_FD001.txt:4:col 10", "not a finite number", "s_5",
            func=lambda: read_table(fleet["train"]))


def test_non_ascii_byte(fleet: dict[str, Path]) -> None:
    raw = fleet["train"].read_bytes().split(b"\n")
    raw[5] = raw[5].replace(b" ", b"\xa0", 1)
    fleet["train"].write_bytes(b"\n".join(raw))
    _raises("train_FD001.txt:6", "non-ASCII", func=lambda: read_table(fleet["train"]))


def test_cycle_not_starting_at_one(fleet: dict[str, Path]) -> None:
    second = _unit_starts(fleet["train"])[1]
    _edit(fleet["train"], lambda ls: ls[:second] + ls[second + 1:])  # unit 2 now starts at 2
    err = _raises(f"train_FD001.txt:{second + 1}:col 2", "unit 2 starts at cycle 2",
                  func=lambda: read_table(fleet["train"]))
    assert (err.line, err.column) == (second + 1, 2)


def test_skipped_cycle(fleet: dict[str, Path]) -> None:
    _edit(fleet["train"], lambda ls: ls[:6] + ls[7:])  # drop cycle 7 of unit 1
    _raises("train_FD001.txt:7:col 2", "cycle 8 follows cycle 6",
            func=lambda: read_table(fleet["train"]))


def test_units_out_of_order(fleet: dict[str, Path]) -> None:
    s = _unit_starts(fleet["train"])
    # Swap the blocks of unit 1 and unit 2: the first backward step is where unit 1 now begins.
    _edit(fleet["train"], lambda ls: ls[s[1]:s[2]] + ls[:s[1]] + ls[s[2]:])
    line = s[2] - s[1] + 1
    _raises(f"train_FD001.txt:{line}:col 1", "unit 1 after unit 2",
            func=lambda: read_table(fleet["train"]))


def test_non_integer_unit(fleet: dict[str, Path]) -> None:
    _edit(fleet["train"], lambda ls: [ls[0], _set_token(ls[1], 1, "1.5"), *ls[2:]])
    _raises("train_FD001.txt:2:col 1", "unit must be an integer", "1.5",
            func=lambda: read_table(fleet["train"]))


@pytest.mark.parametrize("content", ["", "\n\n", "   \n"])
def test_empty_file(fleet: dict[str, Path], content: str) -> None:
    fleet["test"].write_text(content)
    _raises("test_FD001.txt", "empty file", func=lambda: read_table(fleet["test"]))


def test_missing_file(tmp_path: Path) -> None:
    _raises("train_FD001.txt", "file not found",
            func=lambda: read_table(tmp_path / "train_FD001.txt"))


# --- RUL file errors ----------------------------------------------------------------------------

def test_empty_rul_file(fleet: dict[str, Path]) -> None:
    fleet["rul"].write_text("")
    _raises("RUL_FD001.txt", "empty file", func=lambda: read_rul(fleet["rul"]))


@pytest.mark.parametrize(("value", "fragment"), [("-3", "non-negative integer"),
                                                 ("12.5", "non-negative integer"),
                                                 ("1x", "not a number"),
                                                 ("nan", "not a finite number"),
                                                 ("4 5", "expected 1 columns, found 2")])
def test_bad_rul_value(fleet: dict[str, Path], value: str, fragment: str) -> None:
    _edit(fleet["rul"], lambda ls: [ls[0], f"{value} \n"])
    where = "RUL_FD001.txt:2:col 1" if "columns" not in fragment else "RUL_FD001.txt:2"
    _raises(where, fragment, func=lambda: read_rul(fleet["rul"]))


@pytest.mark.parametrize("change", ["drop", "add"])
def test_rul_length_mismatch(fleet: dict[str, Path], change: str) -> None:
    _edit(fleet["rul"], lambda ls: ls[:1] if change == "drop" else [*ls, "17 \n"])
    n = 1 if change == "drop" else 3
    # No single line is at fault here, so the message names the file and both counts.
    _raises("RUL_FD001.txt", f"{n} RUL values for 2 test units",
            func=lambda: load_subset(fleet["rul"].parent, "FD001"))


def test_test_units_not_numbered_from_one(fleet: dict[str, Path]) -> None:
    _edit(fleet["test"], lambda ls: [_set_token(line, 1, str(int(line.split()[0]) + 1))
                                     for line in ls])
    _raises("test_FD001.txt", "numbered 1..N", func=lambda: load_subset(fleet["test"].parent, 1))


# --- summarize (amnl.data.check) ---------------------------------------------------------------

@pytest.fixture(scope="module")
def full_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All 12 synthetic files; FD002/FD004 have six operating conditions, like NASA's."""
    d = tmp_path_factory.mktemp("cmapss")
    for i, name in enumerate(["FD001", "FD002", "FD003", "FD004"]):
        write_fleet(d, name, n_conditions=6 if name in ("FD002", "FD004") else 1, seed=i,
                    **FLEET)
    return d


def test_summarize(full_dir: Path) -> None:
    from amnl.features.conditions import OperatingConditions

    summaries = summarize(full_dir, verify=False,
                          count_conditions=lambda s: OperatingConditions().fit(s).n_conditions_)
    assert [s.file for s in summaries[:3]] == ["train_FD001.txt", "test_FD001.txt",
                                               "RUL_FD001.txt"]
    assert [s.kind for s in summaries] == ["train", "test", "rul"] * 4
    by_file = {s.file: s for s in summaries}
    train = read_table(full_dir / "train_FD002.txt")
    assert by_file["train_FD002.txt"] == FileSummary(
        "train_FD002.txt", "train", len(train), 3, int(train.lengths.min()),
        int(train.lengths.max()), 6)
    assert by_file["train_FD001.txt"].n_conditions == 1
    rul = read_rul(full_dir / "RUL_FD003.txt")
    assert by_file["RUL_FD003.txt"] == FileSummary("RUL_FD003.txt", "rul", 2, 2, int(rul.min()),
                                                   int(rul.max()), None)
    # without a counter (the data stage does not cluster settings itself) there is no count
    assert {s.n_conditions for s in summarize(full_dir, verify=False)} == {None}


def test_summarize_one_subset(full_dir: Path) -> None:
    assert [s.file for s in summarize(full_dir, ["3"], verify=False)] == [
        "train_FD003.txt", "test_FD003.txt", "RUL_FD003.txt"]


def test_summarize_names_missing_files(tmp_path: Path) -> None:
    """A subset with some of its files is an error naming each missing one; subsets with
    none of their files are left alone unless asked for."""
    write_fleet(tmp_path, "FD001", **FLEET)
    (tmp_path / "RUL_FD001.txt").unlink()
    err = _raises(str(tmp_path), "RUL_FD001.txt", func=lambda: summarize(tmp_path, verify=False))
    assert "train_FD001.txt" not in str(err) and "FD004" not in str(err)
    err = _raises("train_FD004.txt", "test_FD004.txt", func=lambda: summarize(tmp_path, ["4"], verify=False))


def test_summarize_checks_the_subsets_present(tmp_path: Path) -> None:
    """A user who downloaded FD001 only: it is checked, the others are not asked for."""
    write_fleet(tmp_path, "FD001", **FLEET)
    assert [s.file for s in summarize(tmp_path, verify=False)] == ["train_FD001.txt", "test_FD001.txt",
                                                     "RUL_FD001.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    _raises(str(empty), "no C-MAPSS files", func=lambda: summarize(empty, verify=False))


def test_summarize_missing_folder(tmp_path: Path) -> None:
    _raises("nowhere", "no such folder", func=lambda: summarize(tmp_path / "nowhere"))


# --- `amnl data check` ---------------------------------------------------------------------------

def test_cli_check_ok(full_dir: Path) -> None:
    result = CliRunner().invoke(data_app, ["check", "--data-dir", str(full_dir), "--no-verify"])
    assert result.exit_code == 0, result.output
    assert "train_FD004.txt" in result.stdout and "RUL_FD002.txt" in result.stdout
    assert "12 files OK" in result.stdout
    # the conditions column: FD002's six regimes, counted by the feature stage's clustering
    line = next(x for x in result.stdout.splitlines() if "train_FD002.txt" in x)
    assert line.split("│")[-2].strip() == "6"


def test_cli_check_one_subset_folder(tmp_path: Path) -> None:
    """`amnl data check` on a folder with FD001 only checks it, names the missing subsets and
    succeeds; --dataset asks for one subset and fails when it is not there."""
    write_fleet(tmp_path, "FD001", **FLEET)
    result = CliRunner().invoke(data_app, ["check", "--data-dir", str(tmp_path), "--no-verify"])
    assert result.exit_code == 0, result.output
    assert "3 files OK" in result.stdout and "train_FD001.txt" in result.stdout
    assert "not in this folder: FD002, FD003, FD004" in result.stdout
    result = CliRunner().invoke(data_app, ["check", "--data-dir", str(tmp_path), "--dataset", "FD001",
                                           "--no-verify"])
    assert result.exit_code == 0 and "not in this folder" not in result.stdout
    result = CliRunner().invoke(data_app, ["check", "--data-dir", str(tmp_path), "--dataset", "2"])
    assert result.exit_code == 2 and "train_FD002.txt" in result.stderr


def test_cli_check_corrupt_file_exits_2(tmp_path: Path) -> None:
    for i, name in enumerate(["FD001", "FD002", "FD003", "FD004"]):
        write_fleet(tmp_path, name, seed=i, **FLEET)
    _edit(tmp_path / "train_FD003.txt",
          lambda ls: [*ls[:8], _set_token(ls[8], 12, "bad"), *ls[9:]])
    result = CliRunner().invoke(data_app, ["check", "--data-dir", str(tmp_path), "--no-verify"])
    assert result.exit_code == 2
    assert isinstance(result.exception, SystemExit)
    assert result.stderr.startswith("error: ")
    assert "train_FD003.txt:9:col 12" in result.stderr
    assert "Traceback" not in result.output


def test_cli_check_names_a_copy_that_differs_from_nasas(tmp_path):
    """Synthetic files in C-MAPSS format are valid but not NASA's: said so, exit 2."""
    write_fleet(tmp_path, "FD001", **FLEET)
    result = CliRunner().invoke(data_app, ["check", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "FD001 is not NASA's published copy: train_FD001.txt:" in result.stderr
    assert "NASA's has 20631 and 100" in result.stderr


def test_csv_as_excel_and_r_write_it(tmp_path: Path) -> None:
    """A BOM, quoted and upper-case headers, extra text columns with non-ASCII bytes, units in
    any order: read as the plain file is; a gap or a repeated cycle inside a unit still fails,
    naming its line in the file."""
    from amnl.data.cmapss import read_histories

    plain = read_table(write_fleet(tmp_path / "f", "FD001", **FLEET)["test"])
    header = ['"' + c.upper() + '"' for c in COLUMNS] + ['"Site name"']
    rows = [[f"{v:.17g}" for v in r] + ['"Zürich, hangar 2"'] for r in plain.values]
    units = sorted({int(r[0]) for r in plain.values})
    shuffled = [r for u in reversed(units) for r in rows if int(float(r[0])) == u]
    body = ",".join(header) + "\r\n" + "\r\n".join(",".join(r) for r in shuffled) + "\r\n"
    excel = tmp_path / "excel.csv"
    excel.write_bytes(b"\xef\xbb\xbf" + body.encode("utf-8"))
    got = read_histories(excel)
    np.testing.assert_array_equal(got.values, plain.values)
    latin = tmp_path / "latin1.csv"  # R's write.csv on a Latin-1 system
    latin.write_bytes(body.encode("latin-1"))
    np.testing.assert_array_equal(read_histories(latin).values, plain.values)
    gap = [r for r in shuffled if not (int(float(r[0])) == units[0] and int(float(r[1])) == 3)]
    (tmp_path / "gap.csv").write_text(",".join(header) + "\n" + "\n".join(",".join(r) for r in gap))
    line = 2 + next(i for i, r in enumerate(gap) if int(float(r[0])) == units[0]
                    and int(float(r[1])) == 4)
    _raises(f"gap.csv:{line}:col 2", "cycle 4 follows cycle 2",
            func=lambda: read_histories(tmp_path / "gap.csv"))
    bad = [list(r) for r in shuffled]
    bad[3][7] = '"n/a"'
    (tmp_path / "text.csv").write_text(",".join(header) + "\n" + "\n".join(",".join(r) for r in bad))
    _raises("text.csv:5:col 8", "'n/a' is not a number", func=lambda: read_histories(tmp_path / "text.csv"))


def test_iter_histories_streams_whole_units(tmp_path: Path) -> None:
    """Pieces of whole units that together are the file; units out of order across a piece
    boundary are still refused, naming the line."""
    from amnl.data.cmapss import iter_histories, read_histories

    path = write_fleet(tmp_path / "f", "FD001", **{**FLEET, "n_test": 6})["test"]
    whole = read_histories(path)
    pieces = list(iter_histories(path, chunk_lines=10))
    assert len(pieces) > 1 and all(len(set(p.units) & set(q.units)) == 0
                                   for p, q in zip(pieces, pieces[1:]))
    np.testing.assert_array_equal(np.concatenate([p.values for p in pieces]), whole.values)
    lines = path.read_text().splitlines()
    first = [ln for ln in lines if ln.split()[0] == "1"]
    swapped = tmp_path / "swapped.txt"
    swapped.write_text("\n".join([*[ln for ln in lines if ln.split()[0] != "1"], *first]) + "\n")
    _raises("swapped.txt:", "units out of order", func=lambda: list(iter_histories(swapped, chunk_lines=10)))
