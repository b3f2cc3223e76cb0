"""``amnl score``: every cycle (or the last) of a whole fleet's history, into Parquet.

The same preprocessing and runtime as ``amnl predict`` and the service
(:class:`amnl.inference.predictor.Predictor`), behind a third front door for histories larger
than memory: :mod:`.histories` reads Parquet, CSV or C-MAPSS text in pieces of whole assets,
:mod:`.local` scores them in one process with bounded memory, and :mod:`.output` writes a
partitioned Parquet folder atomically.
"""
