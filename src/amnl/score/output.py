"""A partitioned Parquet folder, written so that a failed run leaves nothing that looks done.

Parts go to ``DIR.partial-<host>-<pid>/part-00000.parquet``, ...; only when every part is
written is a ``_SUCCESS`` file (rows, parts, model id) added and the folder renamed to ``DIR``
in one step. A reader that finds ``DIR`` finds all of it; a crash leaves only the ``.partial``
folder. The next run on the same host removes a ``.partial`` folder whose process is gone and
leaves alone one whose process still runs (another ``amnl score`` writing the same ``DIR``) or
that another host wrote (its pid means nothing here).

A part is closed once it holds :data:`PART_ROWS` rows, each piece of input a row group in it,
so the output has about ``rows / PART_ROWS`` parts, whatever the size of the pieces.
"""

from __future__ import annotations

import json
import glob
import os
import shutil
import socket
from pathlib import Path

import numpy as np

from amnl.errors import ConfigError
from amnl.extras import require

SUCCESS_FILE = "_SUCCESS"
#: Rows of a part before the next one is started (about 60-100 bytes a row in Arrow: a Ray
#: write task buffers some 15-25 MB to make one).
PART_ROWS = 250_000


def _host() -> str:
    return socket.gethostname().replace("-", "_") or "localhost"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def stale_partials(out: Path) -> list[Path]:
    """``out``'s ``.partial-<host>-<pid>`` folders that this host wrote and whose process is
    gone (a crashed or killed run); a folder without a host in its name (older amnl) counts
    as this host's."""
    stale = []
    for folder in out.parent.glob(f"{glob.escape(out.name)}.partial-*"):
        tag = folder.name[len(out.name) + len(".partial-"):]
        host, _, pid = tag.rpartition("-")
        if not pid.isdigit() or (host and host != _host()):
            continue
        if int(pid) != os.getpid() and not _alive(int(pid)):
            stale.append(folder)
    return stale


def to_arrow(columns: dict):
    """A pyarrow table of a column dict of :func:`amnl.score.local.score_piece`: numeric
    arrays as they are, object arrays as strings, a list (``warnings``) as list<string>."""
    pa = require("pyarrow", "Parquet output")
    return pa.table({k: pa.array(v, pa.list_(pa.string())) if isinstance(v, list)
                     else v.tolist() if v.dtype == object else v for k, v in columns.items()})


def warned_assets(folder: Path, *, from_row: int = 1) -> tuple[int, int]:
    """(assets with a warning, assets) of the parts in ``folder``, a row group at a time,
    counting only an asset's rows from its ``from_row``-th on (``amnl score --cycles all``
    passes the window: every asset's first rows carry the short-history warning). Each
    asset's rows are together in the output (a piece, or a Ray group), so assets are counted
    as runs of equal names."""
    pc = require("pyarrow.compute", "Parquet output")
    pq = require("pyarrow.parquet", "Parquet output")
    flagged = assets = 0
    last, last_flagged, last_rows = None, False, 0
    for f in sorted(folder.glob("*.parquet")):
        file = pq.ParquetFile(f)
        if "warnings" not in file.schema_arrow.names:
            return 0, 0
        for g in range(file.num_row_groups):
            t = file.read_row_group(g, columns=["asset", "warnings"])
            if not t.num_rows:
                continue
            names = np.asarray(t.column("asset").to_pylist(), dtype=object)
            warned = pc.list_value_length(t.column("warnings")).to_numpy(
                zero_copy_only=False) > 0
            starts = np.flatnonzero(np.r_[True, names[1:] != names[:-1]])
            row = np.arange(len(names)) - np.repeat(starts, np.diff(np.r_[starts, len(names)]))
            goes_on = names[0] == last  # the asset the last row group ended with
            if goes_on:
                row[: starts[1] if len(starts) > 1 else len(names)] += last_rows
            runs = np.logical_or.reduceat(warned & (row + 1 >= from_row), starts)
            if goes_on:
                runs[0] |= last_flagged
                flagged -= last_flagged
                assets -= 1
            flagged += int(runs.sum())
            assets += len(starts)
            last, last_flagged, last_rows = names[-1], bool(runs[-1]), int(row[-1]) + 1
    return flagged, assets


class PartitionedWriter:
    """Write column dicts into Parquet parts of about :data:`PART_ROWS` rows, then publish the
    folder atomically.

    Args:
        out: the folder to create (refused if it exists, unless ``overwrite``).
        overwrite: replace an existing ``out`` (only once the new one is complete).
    """

    def __init__(self, out: str | os.PathLike, *, overwrite: bool = False) -> None:
        self.pa = require("pyarrow", "Parquet output")
        self.pq = require("pyarrow.parquet", "Parquet output")
        self.out = Path(out)
        if self.out.exists() and not overwrite:
            raise ConfigError(f"--output {self.out} exists; remove it or pass --overwrite")
        self.overwrite = overwrite
        self.tmp = self.out.with_name(f"{self.out.name}.partial-{_host()}-{os.getpid()}")
        for stale in stale_partials(self.out):
            shutil.rmtree(stale, ignore_errors=True)
        self.tmp.mkdir(parents=True)
        self.parts = 0
        self.rows = 0
        self._part = None  # the open ParquetWriter
        self._part_rows = 0

    def write(self, columns: dict) -> None:
        if not len(columns["cycle"]):
            return
        table = to_arrow(columns)
        if self._part is not None and (self._part_rows >= PART_ROWS
                                       or not table.schema.equals(self._part.schema)):
            self._close_part()
        if self._part is None:
            self._part = self.pq.ParquetWriter(self.tmp / f"part-{self.parts:05d}.parquet",
                                               table.schema)
            self.parts += 1
        self._part.write_table(table)
        self._part_rows += table.num_rows
        self.rows += table.num_rows

    def _close_part(self) -> None:
        if self._part is not None:
            self._part.close()
            self._part, self._part_rows = None, 0

    def commit(self, meta: dict, *, warnings_from_row: int = 1) -> Path:
        """Publish the folder and return it. Its ``_SUCCESS`` holds the rows, parts, assets,
        assets with a warning (:func:`warned_assets` with ``from_row=warnings_from_row``; also
        set as attributes) and ``meta``.

        Raises:
            ConfigError: ``out`` appeared meanwhile (another run) and ``overwrite`` is off;
                this run's parts are removed.
        """
        self._close_part()
        self.assets_with_warnings, self.assets = warned_assets(
            self.tmp, from_row=warnings_from_row)
        (self.tmp / SUCCESS_FILE).write_text(json.dumps(
            {"rows": self.rows, "parts": self.parts, "assets": self.assets,
             "assets_with_warnings": self.assets_with_warnings, **meta}, indent=2) + "\n")
        if self.out.exists():
            if not self.overwrite:
                self.abort()
                raise ConfigError(f"--output {self.out} was created by another run meanwhile; "
                                  "nothing written (pass --overwrite to replace it)")
            old = self.out.with_name(f"{self.out.name}.old-{os.getpid()}")
            os.replace(self.out, old)  # overwrite: the old one goes only now
            os.replace(self.tmp, self.out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(self.tmp, self.out)
        return self.out

    def abort(self) -> None:
        try:
            self._close_part()
        except OSError:  # a full disk: the folder goes anyway
            self._part = None
        shutil.rmtree(self.tmp, ignore_errors=True)
