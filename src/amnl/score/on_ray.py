"""``amnl score --on ray``: the same scoring on Ray Data (extra ``ray``).

``read_parquet`` (a text or CSV input is read by the driver and handed over as Arrow tables)
-> ``groupby(asset).map_groups`` with a pool of actors that each hold the model, so every asset's
history is preprocessed whole and in cycle order by :func:`amnl.score.local.score_piece` (the
code ``amnl predict`` and the service run) -> ``write_parquet`` into the
:class:`~amnl.score.output.PartitionedWriter`'s folder, published atomically.

**The same checks as locally.** The driver checks the columns before anything runs
(:func:`~amnl.score.histories.check_columns`) and each actor an asset's cycles and values
(:func:`~amnl.score.histories.check_assets`), so a repeated or missing cycle is refused, not
scored. The first error an actor raises stops the run and comes back as that error, one line
naming the asset (Ray Data's console messages, which would print its traceback once more, are
held back while the run lasts; its session log keeps them).

**Memory.** The output is streamed to Parquet as the actors produce it (no ``materialize``),
so Ray's object store holds the group-by shuffle (the input, spilled to disk beyond the
store's size) and the blocks in flight, not the output. Parts hold at least
:data:`~amnl.score.output.PART_ROWS` rows (``min_rows_per_file``; one part per write task
may be smaller).

**Actors take fewer CPUs than the machine has.** Ray Data hangs when actors hold every CPU and
the read or shuffle tasks cannot be scheduled (ray-project/ray#44687; seen here with two
actors on two CPUs), so the default pool is one actor less than the CPUs (at least one) and
each actor asks for one CPU.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np

from amnl.config import InferenceConfig
from amnl.data.cmapss import COLUMNS, SETTING_COLUMNS, EngineTable
from amnl.errors import AmnlError
from amnl.extras import require
from amnl.score.histories import check_assets, check_columns, iter_fleet
from amnl.score.local import score_piece
from amnl.score.output import PART_ROWS, PartitionedWriter, to_arrow


def default_actors() -> int:
    return max(1, (os.cpu_count() or 2) - 1)


class ScoreAssets:
    """A Ray actor: the model, loaded once, scoring one asset's rows at a time.

    Args:
        path: the input, for messages.
    """

    def __init__(self, model: str | None, inference: dict, cycles: str, path: str) -> None:
        from amnl.inference.predictor import Predictor

        self.predictor = Predictor.load(model, InferenceConfig(**inference))
        self.required = [*SETTING_COLUMNS, *self.predictor.preprocessor.feature_names]
        self.cycles = cycles
        self.path = path

    def __call__(self, group):
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
        check_assets(values, [asset], self.path, self.required)
        out = score_piece(self.predictor, (EngineTable(self.path, values, [asset]), [asset]),
                          self.cycles)
        return to_arrow(out)


def score_ray(model: str | None, inference: InferenceConfig, input: str | os.PathLike,
              writer: PartitionedWriter, cycles: str, *, address: str | None = None,
              actors: int | None = None, required: list[str] | None = None) -> int:
    """Score ``input`` on Ray into ``writer``'s folder; returns the rows written (the caller
    commits).

    Args:
        required: the columns the model needs (default: the model's, read here).

    Raises:
        DataError: a bad input (missing column, repeated cycle, a value that cannot be
            scored), the first one found, naming the asset; parts already written stay in
            ``writer``'s unpublished folder for the caller's ``abort``.
    """
    ray = require("ray", "amnl score --on ray")
    import pyarrow as pa
    import pyarrow.parquet as pq

    if required is None:
        from amnl.inference.predictor import Predictor

        pre = Predictor.load(model, inference).preprocessor
        required = [*SETTING_COLUMNS, *pre.feature_names]
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
            asset_col = check_columns(ds.schema().names, required, str(p))
            if asset_col != "asset":
                ds = ds.rename_columns({asset_col: "asset"})
        else:
            tables = []
            for table, names in iter_fleet(p, required):
                cols = {c: table.values[:, i] for i, c in enumerate(COLUMNS) if c != "unit"}
                cols["asset"] = np.array(names, dtype=object)[table.unit - 1].tolist()
                tables.append(pa.table(cols))
            ds = ray.data.from_arrow(tables)
        scored = ds.groupby("asset").map_groups(
            ScoreAssets, fn_constructor_args=(model, asdict(inference), cycles, str(p)),
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=actors or default_actors()), num_cpus=1)
        error = None
        with _ray_data_console_quiet():
            try:
                scored.write_parquet(str(writer.tmp), min_rows_per_file=PART_ROWS)
            except Exception as exc:  # an actor's DataError, wrapped by Ray: that error
                error = _amnl_cause(exc)
                if error is None:
                    raise
        if error is not None:
            # raised out here, once the failed execution is collected: its executor sits in
            # reference cycles, and its actors keep their CPUs while it lives (the next run on
            # the same Ray, with one CPU short, would hang: ray-project/ray#44687)
            del ds, scored
            gc.collect()
            raise error
        parts = sorted(writer.tmp.glob("*.parquet"))
        writer.rows = sum(pq.read_metadata(f).num_rows for f in parts)
        writer.parts = len(parts)
        return writer.rows
    finally:
        if started:
            ray.shutdown()


def _amnl_cause(exc: BaseException) -> AmnlError | None:
    """The amnl error an actor raised, out of the Ray errors that carry it (``.cause``)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        cause = getattr(exc, "cause", None)
        if isinstance(cause, AmnlError):  # Ray appends its retry advice to the message
            return type(cause)(str(cause).split("\n", 1)[0])
        exc = cause if isinstance(cause, BaseException) else exc.__cause__
    return None


@contextlib.contextmanager
def _ray_data_console_quiet():
    """Ray Data's console handlers at CRITICAL while a run lasts (its log file keeps all)."""
    handlers = [h for h in logging.getLogger("ray.data").handlers
                if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]
    levels = [h.level for h in handlers]
    for h in handlers:
        h.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for h, level in zip(handlers, levels):
            h.setLevel(level)
