"""``amnl score --on ray``: the same scoring on Ray Data (extra ``ray``).

``read_parquet`` (a text or CSV input is read by the driver and handed over as Arrow tables)
-> ``groupby(asset).map_groups`` with a pool of actors that each hold the model, so every asset's
history is preprocessed whole and in cycle order by :func:`amnl.score.local.score_piece` (the
code ``amnl predict`` and the service run) -> ``write_parquet`` into the
:class:`~amnl.score.output.PartitionedWriter`'s folder, published atomically.

**Actors take fewer CPUs than the machine has.** Ray Data hangs when actors hold every CPU and
the read or shuffle tasks cannot be scheduled (ray-project/ray#44687; seen here with two
actors on two CPUs), so the default pool is one actor less than the CPUs (at least one) and
each actor asks for one CPU.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np

from amnl.config import InferenceConfig
from amnl.data.cmapss import COLUMNS, SETTING_COLUMNS, EngineTable
from amnl.errors import DataError
from amnl.extras import require
from amnl.score.histories import ASSET_COLUMNS, iter_fleet
from amnl.score.local import score_piece
from amnl.score.output import PartitionedWriter


def default_actors() -> int:
    return max(1, (os.cpu_count() or 2) - 1)


class ScoreAssets:
    """A Ray actor: the model, loaded once, scoring one asset's rows at a time."""

    def __init__(self, model: str | None, inference: dict, cycles: str) -> None:
        from amnl.inference.predictor import Predictor

        self.predictor = Predictor.load(model, InferenceConfig(**inference))
        self.cycles = cycles

    def __call__(self, group):
        import pyarrow as pa

        names = group.column_names
        n = group.num_rows
        order = np.argsort(group.column("cycle").to_numpy(zero_copy_only=False), kind="stable")
        values = np.full((n, len(COLUMNS)), np.nan)
        values[:, 0] = 1
        for c in COLUMNS[1:]:
            if c in names:
                values[:, COLUMNS.index(c)] = group.column(c).to_numpy(zero_copy_only=False)
        values = values[order]
        asset = str(group.column("asset")[0].as_py())
        out = score_piece(self.predictor, (EngineTable(f"asset {asset}", values), [asset]),
                          self.cycles)
        return pa.table({k: v.tolist() if v.dtype == object else v for k, v in out.items()})


def score_ray(model: str | None, inference: InferenceConfig, input: str | os.PathLike,
              writer: PartitionedWriter, cycles: str, *, address: str | None = None,
              actors: int | None = None) -> int:
    """Score ``input`` on Ray into ``writer``'s folder; returns the rows written (the caller
    commits)."""
    ray = require("ray", "amnl score --on ray")
    import pyarrow as pa

    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.WARNING)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    try:
        p = Path(input)
        if p.is_dir() or p.suffix in (".parquet", ".pq"):
            ds = ray.data.read_parquet(str(p))
            asset_col = next((c for c in ASSET_COLUMNS if c in ds.schema().names), None)
            if asset_col is None:
                raise DataError(f"no asset column (one of {', '.join(ASSET_COLUMNS)})",
                                path=str(p))
            if asset_col != "asset":
                ds = ds.rename_columns({asset_col: "asset"})
        else:
            tables = []
            for table, names in iter_fleet(p, [*SETTING_COLUMNS]):
                cols = {c: table.values[:, i] for i, c in enumerate(COLUMNS) if c != "unit"}
                cols["asset"] = np.array(names, dtype=object)[table.unit - 1].tolist()
                tables.append(pa.table(cols))
            ds = ray.data.from_arrow(tables)
        n = actors or default_actors()
        scored = ds.groupby("asset").map_groups(
            ScoreAssets, fn_constructor_args=(model, asdict(inference), cycles),
            batch_format="pyarrow", concurrency=n, num_cpus=1).materialize()
        rows = scored.count()
        scored.write_parquet(str(writer.tmp))
        writer.rows = rows
        writer.parts = len(list(writer.tmp.glob("*.parquet")))
        return rows
    finally:
        if started:
            ray.shutdown()
