"""The real NASA C-MAPSS files: sizes, operating conditions and checksums (``needs_data``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from amnl.data.check import FileSummary, summarize
from amnl.data.download import load_checksums, sha256_file, verify
from amnl.errors import DataError

pytestmark = pytest.mark.needs_data

#: Rows and units per file, from ../shared/data/README.md (the files themselves, not NASA's
#: readme, which swaps the FD004 unit counts).
EXPECTED = {
    "train_FD001.txt": (20631, 100), "test_FD001.txt": (13096, 100), "RUL_FD001.txt": (100, 100),
    "train_FD002.txt": (53759, 260), "test_FD002.txt": (33991, 259), "RUL_FD002.txt": (259, 259),
    "train_FD003.txt": (24720, 100), "test_FD003.txt": (16596, 100), "RUL_FD003.txt": (100, 100),
    "train_FD004.txt": (61249, 249), "test_FD004.txt": (41214, 248), "RUL_FD004.txt": (248, 248),
}
#: Operating conditions in the training files (Saxena et al., PHM08).
TRAIN_CONDITIONS = {"FD001": 1, "FD002": 6, "FD003": 1, "FD004": 6}


@pytest.fixture(scope="module")
def summaries(cmapss_dir: Path) -> dict[str, FileSummary]:
    # One pass over all 12 files (k-means included) shared by the tests below.
    from amnl.features.conditions import OperatingConditions

    def count(settings):  # what `amnl data check` passes in
        return OperatingConditions().fit(settings).n_conditions_

    return {s.file: s for s in summarize(cmapss_dir, count_conditions=count)}


def test_rows_and_units(summaries: dict[str, FileSummary]) -> None:
    assert {f: (s.rows, s.units) for f, s in summaries.items()} == EXPECTED


@pytest.mark.parametrize("subset", sorted(TRAIN_CONDITIONS))
def test_operating_conditions(summaries: dict[str, FileSummary], subset: str) -> None:
    assert summaries[f"train_{subset}.txt"].n_conditions == TRAIN_CONDITIONS[subset]
    assert summaries[f"test_{subset}.txt"].n_conditions == TRAIN_CONDITIONS[subset]


def test_shipped_checksums_match_files(cmapss_dir: Path) -> None:
    sums = load_checksums()
    assert {n: sha256_file(cmapss_dir / n) for n in sums} == sums
    verify(cmapss_dir)


@pytest.mark.needs_data
def test_an_edited_value_or_a_deleted_engine_is_not_ok(cmapss_dir, tmp_path):
    """`amnl data check` verifies NASA's SHA-256 sums and published counts, per subset."""
    import shutil

    for f in ("train_FD001.txt", "test_FD001.txt", "RUL_FD001.txt"):
        shutil.copy(cmapss_dir / f, tmp_path / f)
    assert len(summarize(tmp_path)) == 3  # the real files pass
    lines = (tmp_path / "train_FD001.txt").read_text().splitlines()
    cells = lines[10].split()
    cells[7] = f"{float(cells[7]) + 0.01:.2f}"  # one sensor value edited
    (tmp_path / "train_FD001.txt").write_text("\n".join([*lines[:10], " ".join(cells), *lines[11:]]) + "\n")
    with pytest.raises(DataError, match="train_FD001.txt: its SHA-256 differs"):
        summarize(tmp_path)
    test_lines = (tmp_path / "test_FD001.txt").read_text().splitlines()
    last_unit = test_lines[-1].split()[0]
    kept = [ln for ln in test_lines if ln.split()[0] != last_unit]  # the last engine deleted
    (tmp_path / "test_FD001.txt").write_text("\n".join(kept) + "\n")
    shutil.copy(cmapss_dir / "train_FD001.txt", tmp_path / "train_FD001.txt")
    with pytest.raises(DataError):  # the RUL file no longer matches its units: refused too
        summarize(tmp_path)
