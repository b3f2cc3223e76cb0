"""A fleet's histories in pieces of whole assets: Parquet (file or folder), CSV or C-MAPSS text.

Each piece is an :class:`~amnl.data.cmapss.EngineTable` (assets numbered 1..n within it) and
the assets' names. Memory is bounded by the piece (``chunk_rows``, or the longest asset) and,
for Parquet, one row group, not by the input; a Parquet input must hold each asset's rows together and in cycle order (as a
partitioned export by asset does); an asset that reappears later is refused with its name.

Every error names the asset as the input names it (``asset 31``, ``asset engine-031``), never
its place in a piece: :func:`check_columns` and :func:`check_assets` are the checks both
``--on local`` and ``--on ray`` run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from amnl.data.cmapss import COLUMNS, EngineTable, iter_histories
from amnl.errors import DataError
from amnl.extras import require

#: Rows per piece (about 26 x 8 bytes each: 13 MB).
CHUNK_ROWS = 65536
#: Column names an asset id may have.
ASSET_COLUMNS = ("asset", "asset_id", "unit")

Piece = tuple[EngineTable, list[str]]


def iter_fleet(path: str | os.PathLike, required: list[str], *,
               chunk_rows: int = CHUNK_ROWS) -> Iterator[Piece]:
    """Pieces of whole assets of ``path`` (see the module docstring).

    Raises:
        DataError: an unreadable input, a missing required column, assets out of order.
    """
    p = Path(path)
    if p.is_dir() or p.suffix in (".parquet", ".pq"):
        yield from _iter_parquet(p, required, chunk_rows)
        return
    for table in iter_histories(p, required, chunk_lines=chunk_rows):
        names = [str(int(u)) for u in table.units]
        values = table.values.copy()
        values[:, 0] = np.repeat(np.arange(1, len(names) + 1), table.lengths)
        yield EngineTable(table.path, values, names), names


def _parquet_files(p: Path) -> list[Path]:
    files = sorted(p.rglob("*.parquet")) if p.is_dir() else [p]
    if not files:
        raise DataError("no .parquet files in the folder", path=str(p))
    return files


def _iter_parquet(p: Path, required: list[str], chunk_rows: int) -> Iterator[Piece]:
    """Row group by row group (``read_row_group`` without pre-buffering), so memory stays at a
    piece plus one row group. (``ParquetFile.iter_batches`` kept what it had read: RSS grew by
    about 20 MB a 65,536-row batch, 2.6 GB over 9 M rows.)"""
    pq = require("pyarrow.parquet", "Parquet input")
    files = _parquet_files(p)
    try:
        readers = [pq.ParquetFile(f, pre_buffer=False) for f in files]
    except (OSError, ValueError) as exc:  # pyarrow's errors derive from these
        raise DataError(f"not a readable Parquet file or folder ({exc})", path=str(p)) from None
    names = readers[0].schema_arrow.names
    asset_col = check_columns(names, required, str(p))
    present = [c for c in COLUMNS[2:] if c in names]
    seen: set[str] = set()
    buffer: list[tuple[np.ndarray, np.ndarray]] = []  # (asset names, values rows)
    rows = 0
    columns = [asset_col, "cycle", *present]
    for f, r in zip(files, readers):
        _check_types(f, r.schema_arrow, columns[1:])
    batches = (b for r in readers for g in range(r.num_row_groups)
               for b in r.read_row_group(g, columns=columns, use_threads=False)
               .to_batches(max_chunksize=chunk_rows))
    for batch in batches:
        assets = np.asarray(batch.column(0).to_pylist(), dtype=object).astype(str)
        values = np.full((batch.num_rows, len(COLUMNS)), np.nan)
        values[:, 1] = batch.column(1).to_numpy(zero_copy_only=False)
        for j, c in enumerate(present):
            values[:, COLUMNS.index(c)] = batch.column(j + 2).to_numpy(zero_copy_only=False)
        buffer.append((assets, values))
        rows += len(assets)
        if rows >= chunk_rows:
            all_assets = np.concatenate([a for a, _ in buffer])
            all_values = np.concatenate([v for _, v in buffer])
            last = all_assets[-1]  # it may continue in the next batch: keep it
            cut = int(np.flatnonzero(all_assets != last)[-1]) + 1 if (all_assets != last).any() else 0
            if cut:
                yield _piece(p, all_assets[:cut], all_values[:cut], seen, required)
            buffer = [(all_assets[cut:], all_values[cut:])]
            rows = len(all_assets) - cut
    if rows:
        yield _piece(p, np.concatenate([a for a, _ in buffer]),
                     np.concatenate([v for _, v in buffer]), seen, required)


def _check_types(f: Path, schema, numeric: list[str]) -> None:
    """Every file of a folder has the first one's columns, and the cycle and the readings are
    numbers there (a string or boolean column would be parsed or cast silently, or fail
    deep in pyarrow)."""
    import pyarrow as pa

    for c in numeric:
        if c not in schema.names:
            raise DataError(f"column {c} is missing (the folder's first file has it)",
                            path=str(f))
        t = schema.field(c).type
        if not (pa.types.is_integer(t) or pa.types.is_floating(t)):
            raise DataError(f"column {c} holds {t}, not numbers", path=str(f))


def _piece(p: Path, assets: np.ndarray, values: np.ndarray, seen: set[str],
           required: list[str]) -> Piece:
    starts = np.flatnonzero(np.r_[True, assets[1:] != assets[:-1]])
    names = [str(a) for a in assets[starts]]
    again = [a for a in names if a in seen] or ([names[i] for i in range(1, len(names))
                                                 if names[i] in names[:i]])
    if again:
        raise DataError(f"asset {again[0]} appears again after other assets: each asset's rows "
                        "must be together and in cycle order (sort by asset and cycle, or use "
                        "--on ray, which groups them)", path=str(p))
    seen.update(names)
    lengths = np.diff(np.r_[starts, len(assets)])
    values[:, 0] = np.repeat(np.arange(1, len(names) + 1), lengths)
    check_assets(values, names, str(p), required)
    return EngineTable(str(p), values, names), names


def check_columns(names: list[str], required: list[str], path: str) -> str:
    """The asset column of a table with columns ``names``, after checking that ``cycle`` and
    the ``required`` columns are there.

    Raises:
        DataError: no asset column, or a missing column (all of them named).
    """
    asset_col = next((c for c in ASSET_COLUMNS if c in names), None)
    if asset_col is None:
        raise DataError(f"no asset column (one of {', '.join(ASSET_COLUMNS)})", path=path)
    missing = [c for c in ("cycle", *required) if c not in names]
    if missing:
        raise DataError(f"missing column(s) {', '.join(missing)}", path=path)
    return asset_col


def check_assets(values: np.ndarray, names: list[str], path: str, required: list[str]) -> None:
    """Check the rows of whole assets (``values`` in :data:`COLUMNS` order, column 0 the
    asset's place in ``names``, 1..n; each asset's rows together): integer cycles from 1 on,
    stepping by 1 (no repeated, no missing cycle; a history need not start at cycle 1), and a
    finite number in every ``required`` column. The checks of
    :func:`amnl.data.cmapss.validate_units`, naming the asset instead of its place.

    Raises:
        DataError: the first problem, naming the asset, the cycle and the column.
    """
    place, cycle = values[:, 0].astype(np.int64), values[:, 1]

    def asset(r: int) -> str:
        return names[place[r] - 1]
    bad = np.flatnonzero(~np.isfinite(cycle) | (cycle != np.round(cycle)) | (cycle < 1))
    if bad.size:
        r = int(bad[0])
        what = "is missing (null or NaN)" if np.isnan(cycle[r]) else f"{cycle[r]:g}"
        raise DataError(f"asset {asset(r)}: cycle {what}; cycles are integers from 1 on",
                        path=path)
    new = np.r_[True, place[1:] != place[:-1]]
    step = np.flatnonzero(~new & (cycle != np.r_[np.nan, cycle[:-1]] + 1))
    if step.size:
        r = int(step[0])
        got, before = int(cycle[r]), int(cycle[r - 1])
        why = (f"cycle {got} repeated" if got == before else
               f"cycle {got} follows cycle {before}: "
               + ("cycles out of order" if got < before else f"{got - before - 1} missing"))
        raise DataError(f"asset {asset(r)}: {why}; cycles must step by 1", path=path)
    cols = [COLUMNS.index(c) for c in required]
    nonfinite = ~np.isfinite(values[:, cols])
    if nonfinite.any():
        r, j = (int(i) for i in np.argwhere(nonfinite)[0])
        v = values[r, cols[j]]
        what = "is missing (null or NaN)" if np.isnan(v) else f"is {v:g}, not a finite number"
        raise DataError(f"asset {asset(r)} cycle {int(cycle[r])}: {required[j]} {what}",
                        path=path)
