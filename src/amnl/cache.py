"""The one per-user cache folder of amnl: ``$XDG_CACHE_HOME/amnl`` (``~/.cache/amnl``).

Two things live there, each only when asked for: the C-MAPSS files ``amnl data download``
fetches (``CMAPSS/``) and the ONNX files the onnx runtime exports from a run directory on first
use (``onnx/``); whoever writes there logs the path. Nothing is resolved or created at import.
"""

from __future__ import annotations

import os
from pathlib import Path

#: The environment variable that moves every cache (the XDG base-directory convention).
CACHE_ENV_VAR = "XDG_CACHE_HOME"


def cache_dir(*parts: str, create: bool = False) -> Path:
    """``$XDG_CACHE_HOME/amnl/<parts...>``, else ``~/.cache/amnl/<parts...>``.

    Args:
        parts: sub-folders, e.g. ``"onnx"``.
        create: make the folder (and its parents) if missing.

    Example:
        >>> cache_dir("onnx").name
        'onnx'
    """
    base = os.environ.get(CACHE_ENV_VAR) or os.path.join(os.path.expanduser("~"), ".cache")
    path = Path(base, "amnl", *parts)
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path
