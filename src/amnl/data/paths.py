"""Where the C-MAPSS files live: explicit argument > ``AMNL_DATA_DIR`` > user cache directory.

Nothing is resolved or created at import time.
"""

from __future__ import annotations

import os
from pathlib import Path

from amnl.cache import cache_dir

ENV_VAR = "AMNL_DATA_DIR"
#: Sub-folder of the user cache (:func:`amnl.cache.cache_dir`) where downloads go.
CACHE_SUBDIR = "CMAPSS"


#: The package folder holding FD001's test set (gzip), for evaluation and demos without data.
SAMPLE_PACKAGE = "amnl.data"
SAMPLE_SUBSETS = ("FD001",)


def sample_dir() -> Path:
    """The folder of the C-MAPSS files shipped inside amnl (FD001's test and RUL files)."""
    from importlib import resources

    return Path(str(resources.files(SAMPLE_PACKAGE))) / "sample"


def default_cache_dir() -> Path:
    """The per-user cache folder for downloaded data (``$XDG_CACHE_HOME/amnl/CMAPSS``)."""
    return cache_dir(CACHE_SUBDIR)


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Return the folder to read C-MAPSS from.

    Args:
        data_dir: an explicit folder; wins over everything else.

    Returns:
        ``data_dir`` if given, else ``$AMNL_DATA_DIR`` if set, else :func:`default_cache_dir`.
    """
    if data_dir is not None:
        return Path(data_dir)
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    return default_cache_dir()
