"""``amnl serve``: a service that watches a fleet (extra ``serve``).

Readings arrive over HTTP (:mod:`.app`), are validated and applied to each asset's streaming
state by the one writer thread (:mod:`.writer`, group commits through :mod:`.store` into
SQLite or PostgreSQL, :mod:`.db`), and their windows are predicted in batches across assets
(:mod:`.batcher`). :mod:`.service` wires these together; :mod:`.settings` holds the options.
"""

from amnl.serve.settings import ServeSettings

__all__ = ["ServeSettings"]
