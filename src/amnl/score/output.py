"""A partitioned Parquet folder, written so that a failed run leaves nothing that looks done.

Parts go to ``DIR.partial-<pid>/part-00000.parquet``, ...; only when every part is written is a
``_SUCCESS`` file (rows, parts, model id) added and the folder renamed to ``DIR`` in one step.
A reader that finds ``DIR`` finds all of it; a crash leaves only the ``.partial`` folder, which
the next run removes.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from amnl.errors import ConfigError
from amnl.extras import require

SUCCESS_FILE = "_SUCCESS"


class PartitionedWriter:
    """Write column dicts as numbered Parquet parts, then publish the folder atomically.

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
        self.tmp = self.out.with_name(f"{self.out.name}.partial-{os.getpid()}")
        for stale in self.out.parent.glob(f"{self.out.name}.partial-*"):
            shutil.rmtree(stale, ignore_errors=True)
        self.tmp.mkdir(parents=True)
        self.parts = 0
        self.rows = 0

    def write(self, columns: dict) -> None:
        if not len(columns["cycle"]):
            return
        table = self.pa.table({k: list(v) if v.dtype == object else v for k, v in columns.items()})
        self.pq.write_table(table, self.tmp / f"part-{self.parts:05d}.parquet")
        self.parts += 1
        self.rows += table.num_rows

    def commit(self, meta: dict) -> Path:
        (self.tmp / SUCCESS_FILE).write_text(json.dumps(
            {"rows": self.rows, "parts": self.parts, **meta}, indent=2) + "\n")
        if self.out.exists():  # overwrite: the old one goes only now
            old = self.out.with_name(f"{self.out.name}.old-{os.getpid()}")
            os.replace(self.out, old)
            os.replace(self.tmp, self.out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(self.tmp, self.out)
        return self.out

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
