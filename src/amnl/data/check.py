"""Validate a C-MAPSS folder and summarise each of its 12 files (``amnl data check``)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from amnl.data.cmapss import (
    SETTING_COLUMNS,
    SUBSETS,
    EngineTable,
    check_subset_name,
    load_subset,
    subset_files,
)
from amnl.data.paths import ENV_VAR
from amnl.errors import DataError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FileSummary:
    """What one C-MAPSS file holds.

    Attributes:
        file: file name, e.g. ``train_FD001.txt``.
        kind: ``train``, ``test`` or ``rul``.
        rows: data lines.
        units: engines (for RUL files: one value per test engine, so ``units == rows``).
        min_cycles: shortest engine in cycles (RUL files: smallest RUL value).
        max_cycles: longest engine in cycles (RUL files: largest RUL value).
        n_conditions: operating regimes found in this file's 3 settings; None for RUL files
            and when :func:`summarize` is given no ``count_conditions``.
    """

    file: str
    kind: str
    rows: int
    units: int
    min_cycles: int
    max_cycles: int
    n_conditions: int | None


#: Counts the operating regimes of a file's settings (rows, 3) -> int.
ConditionCounter = Callable[[np.ndarray], int]


def _table_summary(table: EngineTable, kind: str,
                   count_conditions: ConditionCounter | None) -> FileSummary:
    lengths = table.lengths
    n = (int(count_conditions(table.columns(SETTING_COLUMNS)))
         if count_conditions is not None else None)
    return FileSummary(Path(table.path).name, kind, len(table), len(lengths), int(lengths.min()),
                       int(lengths.max()), n)


def present_subsets(data_dir: str | os.PathLike) -> tuple[list[str], list[str]]:
    """Which subsets a folder holds: (subsets with at least one of their 3 files, the others)."""
    d = Path(data_dir)
    present = [n for n in SUBSETS if any(p.is_file() for p in subset_files(d, n).values())]
    return present, [n for n in SUBSETS if n not in present]


def published_problems(data_dir: str | os.PathLike, name: str,
                       summaries: list[FileSummary]) -> list[str]:
    """How a subset's files differ from NASA's published ones: SHA-256 sums (shipped in
    ``amnl/data/SHA256SUMS``) and the published row and unit counts (:data:`SUBSETS`)."""
    from amnl.data.download import load_checksums, sha256_file

    sums = load_checksums()
    d = Path(data_dir)
    train_rows, train_units, test_rows, test_units = SUBSETS[name]
    expected = {f"train_{name}.txt": (train_rows, train_units),
                f"test_{name}.txt": (test_rows, test_units), f"RUL_{name}.txt": (test_units, test_units)}
    out = []
    for summary in summaries:
        rows, units = expected[summary.file]
        if (summary.rows, summary.units) != (rows, units):
            out.append(f"{summary.file}: {summary.rows} rows and {summary.units} units, NASA's has "
                       f"{rows} and {units}")
        elif summary.file in sums and sha256_file(d / summary.file) != sums[summary.file]:
            out.append(f"{summary.file}: its SHA-256 differs from NASA's file (a value was changed)")
    return out


def summarize(data_dir: str | os.PathLike,
              subsets: Iterable[str] | None = None, *, verify: bool = True,
              count_conditions: ConditionCounter | None = None) -> list[FileSummary]:
    """Read and validate the C-MAPSS files in ``data_dir``; one summary per file.

    Every file is parsed with :func:`amnl.data.cmapss.read_table` / ``read_rul`` (all their
    checks apply) and each RUL file's length is checked against its test file's units.

    Args:
        data_dir: folder holding ``train_/test_/RUL_FD00x.txt``.
        subsets: sub-datasets to check (``FD001``.. or ``1``..); default: those the folder
            holds (any of a subset's three files), so a folder of FD001 alone is fine.
        verify: also check each file against NASA's published one (SHA-256 and the published
            row and unit counts; :func:`published_problems`). False for files of your own in
            C-MAPSS format.
        count_conditions: how to count a file's operating regimes from its settings (the
            feature stage's clustering, which ``amnl data check`` passes in: this stage reads
            files and does not import the features); None leaves ``n_conditions`` None.

    Returns:
        Summaries in order train, test, RUL for each subset.

    Raises:
        DataError: the folder is missing or holds no subset, a subset checked misses some of
            its files (all missing names are listed), a file is malformed (file, line and
            column are named), or (``verify``) a subset differs from NASA's published files.

    Example:
        >>> [s.units for s in summarize("../shared/data/CMAPSS", ["FD001"])]  # doctest: +SKIP
        [100, 100, 100]
    """
    d = Path(data_dir)
    if not d.is_dir():
        raise DataError(f"no such folder; run `amnl data download` or set {ENV_VAR}", path=str(d))
    if subsets is None:
        names = present_subsets(d)[0]
        if not names:
            raise DataError("no C-MAPSS files here (train_/test_/RUL_FD00x.txt); run "
                            "`amnl data download`", path=str(d))
    else:
        names = [check_subset_name(s) for s in subsets]
    missing = [p.name for n in names for p in subset_files(d, n).values() if not p.is_file()]
    if missing:
        raise DataError(f"missing {', '.join(missing)}; run `amnl data download`", path=str(d))
    out: list[FileSummary] = []
    for name in names:
        logger.info("checking %s in %s", name, d)
        subset = load_subset(d, name)
        rul = subset.rul
        out.append(_table_summary(subset.train, "train", count_conditions))
        out.append(_table_summary(subset.test, "test", count_conditions))
        out.append(FileSummary(subset_files(d, name)["rul"].name, "rul", len(rul), len(rul),
                               int(rul.min()), int(rul.max()), None))
        problems = published_problems(d, name, out[-3:]) if verify else []
        if problems:
            raise DataError(f"{name} is not NASA's published copy: {'; '.join(problems)} (run "
                            "`amnl data download --force`, or --no-verify for files of your own)",
                            path=str(d))
    return out
