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
import os
import shutil
import socket
from pathlib import Path

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
    for folder in out.parent.glob(f"{out.name}.partial-*"):
        tag = folder.name[len(out.name) + len(".partial-"):]
        host, _, pid = tag.rpartition("-")
        if not pid.isdigit() or (host and host != _host()):
            continue
        if int(pid) != os.getpid() and not _alive(int(pid)):
            stale.append(folder)
    return stale


def to_arrow(columns: dict):
    """A pyarrow table of a column dict of :func:`amnl.score.local.score_piece`: numeric
    arrays as they are, object arrays as strings."""
    pa = require("pyarrow", "Parquet output")
    return pa.table({k: v.tolist() if v.dtype == object else v for k, v in columns.items()})


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

    def commit(self, meta: dict) -> Path:
        """Publish the folder (with ``meta`` in its ``_SUCCESS``) and return it.

        Raises:
            ConfigError: ``out`` appeared meanwhile (another run) and ``overwrite`` is off;
                this run's parts are removed.
        """
        self._close_part()
        (self.tmp / SUCCESS_FILE).write_text(json.dumps(
            {"rows": self.rows, "parts": self.parts, **meta}, indent=2) + "\n")
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
