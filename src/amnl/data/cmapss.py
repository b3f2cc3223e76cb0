"""Read and validate NASA C-MAPSS text files (train_FDxxx, test_FDxxx, RUL_FDxxx).

Source of the facts below: Saxena et al., PHM08, and ``../shared/data/README.md``.
Every check raises :class:`amnl.errors.DataError` naming the file, the line (1-based) and,
where it applies, the column (1-based, with its name).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from amnl.errors import DataError

#: The four sub-datasets and their published sizes (train rows, train units, test rows, test units).
SUBSETS: dict[str, tuple[int, int, int, int]] = {
    "FD001": (20631, 100, 13096, 100),
    "FD002": (53759, 260, 33991, 259),
    "FD003": (24720, 100, 16596, 100),
    "FD004": (61249, 249, 41214, 248),
}
#: Operating conditions per subset (the 3 settings form 6 clusters in FD002/FD004).
N_CONDITIONS: dict[str, int] = {"FD001": 1, "FD002": 6, "FD003": 1, "FD004": 6}
SETTING_COLUMNS = ["setting_1", "setting_2", "setting_3"]
SENSOR_COLUMNS = [f"s_{i}" for i in range(1, 22)]
#: The 26 whitespace-separated columns of a train/test file, in order.
COLUMNS = ["unit", "cycle", *SETTING_COLUMNS, *SENSOR_COLUMNS]
#: The sensors in degrees Rankine and in psia (NASA's data description): a fleet that reports
#: degrees Celsius and kPa instead is not what the models were trained on (the input checks
#: flag it; :func:`in_celsius_and_kpa` makes such a fleet for the tests and reproductions).
RANKINE_SENSORS = ("s_1", "s_2", "s_3", "s_4")
PSIA_SENSORS = ("s_5", "s_6", "s_7", "s_11")


def in_celsius_and_kpa(rows: np.ndarray) -> np.ndarray:
    """C-MAPSS rows (:data:`COLUMNS` order) with the temperatures in degrees Celsius and the
    pressures in kPa: the same engine as a user with SI telemetry would send it."""
    out = np.array(rows, dtype=np.float64, copy=True)
    for s in RANKINE_SENSORS:
        out[:, COLUMNS.index(s)] = (out[:, COLUMNS.index(s)] - 491.67) * 5 / 9
    for s in PSIA_SENSORS:
        out[:, COLUMNS.index(s)] *= 6.894757
    return out
#: Sensors 1, 5, 6, 10, 16, 18, 19 are constant or near-constant; these 14 carry degradation.
INFORMATIVE_SENSORS = [f"s_{i}" for i in (2, 3, 4, 7, 8, 9, 11, 12, 13, 14, 15, 17, 20, 21)]


@dataclass(frozen=True)
class EngineTable:
    """One train or test file: rows of (unit, cycle, settings, sensors), grouped by unit.

    Attributes:
        path: where it was read from (for messages).
        values: float64 array (rows, 26) in :data:`COLUMNS` order.
        names: the assets' own names by unit (unit ``u`` is ``names[u - 1]``), when the units
            are places in a piece rather than the file's ids (``amnl score``); messages say
            ``asset <name>`` then.
    """

    path: str
    values: np.ndarray
    names: list[str] | None = None

    def where(self, row: int) -> str:
        """``unit <id> cycle <c>`` (or ``asset <name> cycle <c>``) of a row, for messages."""
        u, c = int(self.values[row, 0]), int(self.values[row, 1])
        who = f"unit {u}" if self.names is None else f"asset {self.names[u - 1]}"
        return f"{who} cycle {c}"

    @property
    def unit(self) -> np.ndarray:
        """Unit id of every row, int64."""
        return self.values[:, 0].astype(np.int64)

    @property
    def cycle(self) -> np.ndarray:
        """Cycle of every row, int64."""
        return self.values[:, 1].astype(np.int64)

    @property
    def units(self) -> np.ndarray:
        """Unit ids in file order, one per engine."""
        return self.unit[self.starts]

    @property
    def starts(self) -> np.ndarray:
        """Row index where each unit begins."""
        u = self.values[:, 0]
        return np.flatnonzero(np.r_[True, u[1:] != u[:-1]])

    @property
    def lengths(self) -> np.ndarray:
        """Number of cycles of each unit."""
        return np.diff(np.r_[self.starts, len(self.values)])

    def columns(self, names: list[str]) -> np.ndarray:
        """The named columns as a float64 array (rows, len(names))."""
        return self.values[:, [COLUMNS.index(n) for n in names]]

    def __len__(self) -> int:
        return len(self.values)


#: Unit ids of the k-th table pooled by :func:`pool_engines` are offset by k times this.
POOL_UNIT_OFFSET = 1000


def pool_engines(parts: list[tuple[EngineTable, np.ndarray]]) -> tuple[EngineTable, list[np.ndarray]]:
    """One table of the chosen engines of several files (training on more than one subset).

    Args:
        parts: (table, unit ids to keep) pairs; the first table's ids are kept as they are, the
            k-th table's are offset by ``k * POOL_UNIT_OFFSET`` so that every engine stays apart.

    Returns:
        The pooled table and, per part, the unit ids it has there.
    """
    values, units = [], []
    for k, (table, keep) in enumerate(parts):
        rows = table.values[np.isin(table.unit, keep)].copy()
        rows[:, 0] += k * POOL_UNIT_OFFSET
        values.append(rows)
        units.append(np.asarray(keep, np.int64) + k * POOL_UNIT_OFFSET)
    return EngineTable("+".join(t.path for t, _ in parts), np.concatenate(values)), units


@dataclass(frozen=True)
class Subset:
    """A C-MAPSS sub-dataset: training file, and (optionally) test file with its true RUL."""

    name: str
    train: EngineTable | None
    test: EngineTable | None = None
    rul: np.ndarray | None = None


#: Lines parsed at once by :func:`parse_rows` (bounds the temporary token strings).
PARSE_BLOCK_LINES = 4096


def _read_bytes(path: Path) -> bytes:
    """A file's bytes; ``NAME.gz`` stands in for a missing ``NAME`` (the shipped sample)."""
    gz = path.with_name(path.name + ".gz")
    if not path.exists() and gz.is_file():
        import gzip

        try:
            return gzip.decompress(gz.read_bytes())
        except (OSError, EOFError) as exc:
            raise DataError(f"not a readable gzip file ({exc})", path=str(gz)) from None
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError("file not found", path=str(path)) from None
    except OSError as exc:
        raise DataError(f"cannot read file ({exc.strerror})", path=str(path)) from None


#: File signatures (leading bytes) of formats a user may hand over by mistake, as named in
#: an error message. Parquet files also end with PAR1; the start is enough to name one.
MAGIC_BYTES = {b"\x1f\x8b": "a gzip-compressed file (decompress it first: gunzip)",
               b"\x89PNG\r\n\x1a\n": "a binary file (PNG image)",
               b"\xff\xd8\xff": "a binary file (JPEG image)",
               b"%PDF-": "a binary file (PDF document)",
               b"PK\x03\x04": "a zip archive (an .xlsx workbook is one: save it as CSV)",
               b"PAR1": "a Parquet file (amnl score reads Parquet)",
               b"BZh": "a bzip2-compressed file (decompress it first)",
               b"\xfd7zXZ\x00": "an xz-compressed file (decompress it first)"}


def _not_binary(head: bytes, path: str) -> None:
    """Raise a :class:`DataError` saying what a file is when its first bytes show it is not
    text (a known signature, or NUL bytes), rather than failing later on a strange byte."""
    what = next((name for magic, name in MAGIC_BYTES.items() if head.startswith(magic)), None)
    if what is None and b"\x00" in head:
        what = "a binary file (it holds NUL bytes)"
    if what is not None:
        raise DataError(f"not a text file of sensor readings: it looks like {what}", path=path)


def _delimiter_hint(line: str) -> str:
    """What a first line that is not comma-separated looks like, if it shows another
    separator (``"; it looks like a semicolon-separated file: ..."``), else ``""``."""
    if "," in line:
        return ""
    for sep, name in ((";", "semicolon"), ("\t", "tab"), ("|", "pipe")):
        if line.count(sep) >= 2:
            return (f"; it looks like a {name}-separated file: amnl reads CSV with commas as "
                    "separators (and a header), or C-MAPSS text (numbers separated by spaces)")
    return ""


def _read_text(path: Path) -> list[str]:
    raw = _read_bytes(path)
    _not_binary(raw[:1024], str(path))
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(f"non-ASCII byte 0x{raw[exc.start]:02x}", path=str(path), line=line) from None
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise DataError("empty file", path=str(path))
    return lines


def _locate_bad_token(lines: list[str], path: str, names: list[str], first_line: int) -> DataError:
    """Slow path: find the first token that is not a finite number."""
    for i, line in enumerate(lines, start=first_line):
        for j, tok in enumerate(line.split(), start=1):
            try:
                v = float(tok)
            except ValueError:
                hint = _delimiter_hint(line) if i == 1 else ""
                return DataError(f"{tok!r} is not a number ({names[j - 1]}){hint}", path=path,
                                 line=i, column=j)
            if not np.isfinite(v):
                return DataError(f"{tok!r} is not a finite number ({names[j - 1]})", path=path, line=i,
                                 column=j)
    return DataError("unparseable content", path=path)  # pragma: no cover - caller found one


def parse_rows(lines: list[str], path: str, names: list[str] = COLUMNS, *, first_line: int = 1,
               sep: str | None = None) -> np.ndarray:
    """Parse whitespace-separated numeric rows, checking the column count of every line.

    Args:
        lines: text lines without newline characters.
        path: file name used in messages.
        names: expected column names (their number is the expected column count).
        first_line: file line number of ``lines[0]`` (2 when a header precedes the rows).
        sep: field separator; None splits on whitespace.

    Returns:
        float64 array (len(lines), len(names)).
    """
    n = len(names)
    if sep is not None:
        lines = [" ".join(cell.strip() or "<empty>" for cell in line.split(sep)) for line in lines]
    for i, line in enumerate(lines):
        got = len(line.split())
        if got != n:
            what = "empty line" if got == 0 else f"expected {n} columns, found {got}"
            raise DataError(what, path=path, line=i + first_line)
    # parsed a block of lines at a time: the Python token strings of a whole file would take
    # about 60 bytes per number (100 MB for FD004's test file), the array 8
    values = np.empty((len(lines), n), dtype=np.float64)
    for start in range(0, len(lines), PARSE_BLOCK_LINES):
        block = lines[start: start + PARSE_BLOCK_LINES]
        try:
            values[start: start + len(block)] = np.array(
                " ".join(block).split(), dtype=np.float64).reshape(len(block), n)
        except ValueError:
            raise _locate_bad_token(block, path, names, first_line + start) from None
    bad = ~np.isfinite(values)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise DataError(f"{lines[r].split()[c]!r} is not a finite number ({names[c]})", path=path,
                        line=int(r) + first_line, column=int(c) + 1)
    return values


def validate_units(values: np.ndarray, path: str, *, cycles_start_at_one: bool = True,
                   first_line: int = 1, line_numbers: np.ndarray | None = None) -> None:
    """Check unit/cycle integrity: integer ids, units in increasing order, cycles step by 1.

    ``values`` holds unit and cycle in its first two columns; ``first_line`` is the file line
    of row 0, or ``line_numbers`` gives each row's file line (rows sorted after reading).
    """
    unit, cycle = values[:, 0], values[:, 1]

    def at(r) -> int:
        """The file line of row ``r``."""
        return int(line_numbers[r]) if line_numbers is not None else int(r) + first_line
    for col, arr in ((1, unit), (2, cycle)):
        frac = np.flatnonzero(arr != np.round(arr))
        if frac.size:
            r = frac[0]
            raise DataError(f"{COLUMNS[col - 1]} must be an integer, found {arr[r]:g}", path=path,
                            line=at(r), column=col)
    new_unit = np.r_[True, unit[1:] != unit[:-1]]
    # Units must appear in increasing order, each as one contiguous block.
    back = np.flatnonzero(np.r_[False, unit[1:] < unit[:-1]])
    if back.size:
        r = back[0]
        raise DataError(f"units out of order: unit {int(unit[r])} after unit {int(unit[r - 1])}",
                        path=path, line=at(r), column=1)
    below = np.flatnonzero(cycle < 1)
    if below.size:
        r = below[0]
        raise DataError(f"cycle {int(cycle[r])} of unit {int(unit[r])}: cycles count from 1",
                        path=path, line=at(r), column=2)
    if cycles_start_at_one:
        bad_start = np.flatnonzero(new_unit & (cycle != 1))
        if bad_start.size:
            r = bad_start[0]
            raise DataError(f"unit {int(unit[r])} starts at cycle {int(cycle[r])}, expected 1",
                            path=path, line=at(r), column=2)
    bad_step = np.flatnonzero(~new_unit & (cycle != np.r_[np.nan, cycle[:-1]] + 1))
    if bad_step.size:
        r = bad_step[0]
        raise DataError(f"unit {int(unit[r])}: cycle {int(cycle[r])} follows cycle {int(cycle[r - 1])}, "
                        "expected a step of 1", path=path, line=at(r), column=2)


def read_table(path: str | os.PathLike, *, cycles_start_at_one: bool = True) -> EngineTable:
    """Read and validate a ``train_FDxxx.txt`` / ``test_FDxxx.txt`` file.

    Args:
        path: the file.
        cycles_start_at_one: require every unit to start at cycle 1 (true for NASA's files).

    Returns:
        An :class:`EngineTable`.

    Raises:
        DataError: wrong column count, non-numeric or NaN/inf value, non-integer unit/cycle,
            units out of order, cycles not starting at 1 or not stepping by 1, empty file.

    Example:
        >>> t = read_table("../shared/data/CMAPSS/train_FD001.txt")  # doctest: +SKIP
        >>> t.values.shape, len(t.units)
        ((20631, 26), 100)
    """
    p = Path(path)
    lines = _read_text(p)
    values = parse_rows(lines, str(p))
    validate_units(values, str(p), cycles_start_at_one=cycles_start_at_one)
    return EngineTable(str(p), values)


def read_rul(path: str | os.PathLike, n_units: int | None = None) -> np.ndarray:
    """Read ``RUL_FDxxx.txt``: one non-negative integer per line, for test units 1..N in order.

    Args:
        path: the file.
        n_units: number of test units; a different line count is an error.

    Returns:
        int64 array (N,).
    """
    p = Path(path)
    lines = _read_text(p)
    values = parse_rows(lines, str(p), names=["rul"])[:, 0]
    for r, v in enumerate(values):
        if v != round(v) or v < 0:
            raise DataError(f"RUL must be a non-negative integer, found {lines[r].strip()!r}",
                            path=str(p), line=r + 1, column=1)
    if n_units is not None and len(values) != n_units:
        # Point at the first line that is missing, or the first one too many.
        raise DataError(f"{len(values)} RUL values for {n_units} test units", path=str(p),
                        line=min(len(values), n_units) + 1)
    return values.astype(np.int64)


def subset_files(data_dir: str | os.PathLike, name: str) -> dict[str, Path]:
    """Paths of the three files of a subset (``train``, ``test``, ``rul``)."""
    name = check_subset_name(name)
    d = Path(data_dir)
    return {"train": d / f"train_{name}.txt", "test": d / f"test_{name}.txt",
            "rul": d / f"RUL_{name}.txt"}


def check_subset_name(name: str) -> str:
    """Normalise ``fd001``/``FD001``/``1`` to ``FD001``; reject anything else."""
    n = str(name).upper()
    if n.isdigit():
        n = f"FD{int(n):03d}"
    if n not in SUBSETS:
        raise DataError(f"unknown subset {name!r}; choose one of {', '.join(SUBSETS)}")
    return n


def load_subset(data_dir: str | os.PathLike, name: str, *, train: bool = True,
                test: bool = True) -> Subset:
    """Read a sub-dataset's files. Training code passes ``test=False`` and never opens test files.

    Args:
        data_dir: folder holding the 12 C-MAPSS files.
        name: ``FD001`` .. ``FD004``.
        train: read ``train_FDxxx.txt``.
        test: read ``test_FDxxx.txt`` and ``RUL_FDxxx.txt`` (checked against the test unit count).
    """
    name = check_subset_name(name)
    files = subset_files(data_dir, name)
    wanted = [files[k] for k, on in (("train", train), ("test", test), ("rul", test)) if on]
    missing = [f.name for f in wanted
               if not f.is_file() and not f.with_name(f.name + ".gz").is_file()]
    if missing:
        from amnl.data.paths import ENV_VAR

        raise DataError(f"{data_dir}: {', '.join(missing)} not found (C-MAPSS {name}); pass "
                        f"--data-dir DIR (or set ${ENV_VAR}) to the folder that holds the "
                        "C-MAPSS files, or run `amnl data download` to fetch them")
    tr = read_table(files["train"]) if train else None
    te = rul = None
    if test:
        te = read_table(files["test"])
        units = te.units
        if not np.array_equal(units, np.arange(1, len(units) + 1)):
            raise DataError("test units must be numbered 1..N to match the RUL file",
                            path=str(files["test"]))
        rul = read_rul(files["rul"], n_units=len(units))
    return Subset(name, tr, te, rul)


def read_histories(path: str | os.PathLike, required: list[str] | None = None) -> EngineTable:
    """Read sensor histories to predict on: C-MAPSS text format, or CSV with named columns.

    A CSV needs a header naming at least ``unit`` (or ``asset``), ``cycle``, the three settings
    and the ``required`` sensors, in any case and quoted or not; other columns are ignored,
    whatever they hold. CSV as Excel and R write it is read: a UTF-8 byte-order mark, quoted
    fields, units in any order (rows are sorted by unit and cycle). Cycles need not start at 1
    (a recent history is fine) but must step by 1 within a unit, without gaps or repeats.

    Args:
        path: the file (``.csv`` or any file whose first line contains a comma is CSV).
        required: column names the model needs, for the CSV check.

    Returns:
        An :class:`EngineTable` with all 26 columns (absent, unused sensors are 0).
    """
    p = Path(path)
    if _is_csv(p):
        return _read_csv(p, required)
    lines = _read_text(p)
    values = parse_rows(lines, str(p))
    validate_units(values, str(p), cycles_start_at_one=False)
    return EngineTable(str(p), values)


#: Header names accepted for a column besides its own (case is ignored everywhere).
COLUMN_ALIASES = {"asset": "unit"}


def _read_csv(p: Path, required: list[str] | None) -> EngineTable:
    """The CSV branch of :func:`read_histories`, with the csv module."""
    import csv
    import io

    raw = _read_bytes(p)
    _not_binary(raw[:1024], str(p))
    # utf-8-sig drops Excel's byte-order mark; bytes that are not UTF-8 (in columns amnl does
    # not read) are kept as escapes, and a number made of them fails below with its place
    text = raw.decode("utf-8-sig", errors="surrogateescape")
    rows = [r for r in csv.reader(io.StringIO(text, newline=""))]
    while rows and not any(c.strip() for c in rows[-1]):
        rows.pop()
    if not rows:
        raise DataError("empty file", path=str(p))
    header = [COLUMN_ALIASES.get(h.strip().lower(), h.strip().lower()) for h in rows[0]]
    where: dict[str, int] = {}
    for j, name in enumerate(header):
        if name in COLUMNS:
            if name in where:
                raise DataError(f"column {name!r} appears twice in the header; which one holds "
                                "the readings is ambiguous", path=str(p), line=1, column=j + 1)
            where[name] = j
    needed = ["unit", "cycle", *SETTING_COLUMNS, *(required or [])]
    missing = [c for c in dict.fromkeys(needed) if c not in where]
    if missing:
        header_line = text.lstrip("\ufeff").split("\n", 1)[0]
        raise DataError(f"CSV header lacks column(s) {', '.join(missing)}"
                        f"{_delimiter_hint(header_line)}", path=str(p), line=1)
    if len(rows) < 2:
        raise DataError("CSV has a header but no rows", path=str(p))
    values = np.zeros((len(rows) - 1, len(COLUMNS)))
    for i, row in enumerate(rows[1:]):
        line = i + 2
        if not any(c.strip() for c in row):
            raise DataError("empty line", path=str(p), line=line)
        for name, j in where.items():
            cell = row[j].strip() if j < len(row) else ""
            try:
                v = float(cell)
            except ValueError:
                what = "is empty" if not cell else f"{cell!r} is not a number"
                raise DataError(f"{name} {what}", path=str(p), line=line, column=j + 1) from None
            if not np.isfinite(v):
                raise DataError(f"{cell!r} is not a finite number ({name})", path=str(p),
                                line=line, column=j + 1)
            values[i, COLUMNS.index(name)] = v
    order = np.lexsort((values[:, 1], values[:, 0]))  # by unit, then cycle: any block order
    validate_units(values[order], str(p), cycles_start_at_one=False,
                   line_numbers=order + 2)
    return EngineTable(str(p), values[order])


#: Lines per chunk when histories are streamed (:func:`iter_histories`); a chunk always ends
#: at a unit boundary, so a unit longer than this makes its chunk longer.
STREAM_CHUNK_LINES = 65536


def iter_histories(path: str | os.PathLike, required: list[str] | None = None, *,
                   chunk_lines: int = STREAM_CHUNK_LINES) -> Iterator[EngineTable]:
    """:func:`read_histories` in pieces of whole units, for files larger than memory.

    C-MAPSS text is streamed: memory is bounded by ``chunk_lines`` (or the longest unit), not
    by the file; units must come in increasing order, as the format requires. A CSV, whose
    units may come in any order, is read whole (as a numeric array, 8 bytes a value) and then
    handed out in pieces.
    """
    p = Path(path)
    if _is_csv(p):
        table = _read_csv(p, required)
        starts = np.r_[table.starts, len(table)]
        per_chunk = max(1, chunk_lines // max(1, int(table.lengths.mean())))
        for i in range(0, len(starts) - 1, per_chunk):
            j = min(len(starts) - 1, i + per_chunk)
            yield EngineTable(table.path, table.values[starts[i]:starts[j]])
        return
    pending: list[str] = []
    first_line, last_unit, line_no = 1, None, 0

    def flush(lines: list[str], first: int) -> EngineTable:
        values = parse_rows(lines, str(p), first_line=first)
        validate_units(values, str(p), cycles_start_at_one=False, first_line=first)
        return EngineTable(str(p), values)

    try:
        f = open(p, encoding="ascii", newline=None)
    except FileNotFoundError:
        raise DataError("file not found", path=str(p)) from None
    with f:
        _not_binary(f.buffer.peek(1024)[:1024], str(p))
        try:
            for line_no, line in enumerate(f, start=1):
                line = line.rstrip("\n")
                unit = line.split(maxsplit=1)[0] if line.strip() else None
                if len(pending) >= chunk_lines and unit is not None and unit != last_unit:
                    table = flush(pending, first_line)
                    if int(float(unit)) <= int(table.unit[-1]):
                        raise DataError(f"units out of order: unit {unit} after unit "
                                        f"{int(table.unit[-1])}", path=str(p), line=line_no, column=1)
                    yield table
                    pending, first_line = [], line_no
                pending.append(line)
                last_unit = unit
        except UnicodeDecodeError as exc:
            raise DataError(f"non-ASCII byte 0x{exc.object[exc.start]:02x}", path=str(p),
                            line=line_no + 1) from None
    while pending and not pending[-1].strip():
        pending.pop()
    if not pending and first_line == 1:
        raise DataError("empty file", path=str(p))
    if pending:
        yield flush(pending, first_line)


def _is_csv(p: Path) -> bool:
    """A ``.csv`` file, or any whose first line holds a comma (else C-MAPSS text)."""
    if p.suffix.lower() == ".csv":
        return True
    try:
        with open(p, "rb") as f:
            head = f.read(1024)
            _not_binary(head, str(p))
            first = head.split(b"\n", 1)[0] + (f.readline() if b"\n" not in head else b"")
        return b"," in first
    except FileNotFoundError:
        raise DataError("file not found", path=str(p)) from None
    except OSError as exc:
        raise DataError(f"cannot read file ({exc.strerror})", path=str(p)) from None
