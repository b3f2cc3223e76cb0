"""Optional dependencies: import them where they are used, failing with the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from amnl.errors import AmnlError


class MissingExtraError(AmnlError, ImportError):
    """An optional dependency is not installed: the message names the extra that installs it."""


#: Extra that provides each optional module.
EXTRA_OF = {"onnx": "export", "onnxruntime": "export", "onnxscript": "export",
            "matplotlib": "plot", "fastapi": "serve", "uvicorn": "serve", "sqlalchemy": "serve",
            "prometheus_client": "serve", "psycopg": "postgres", "pyarrow": "score", "ray": "ray"}


def require(module: str, purpose: str | None = None) -> ModuleType:
    """Import ``module``, or raise :class:`MissingExtraError` (an ImportError) saying which
    extra of amnl installs it.

    Example:
        >>> require("json").__name__
        'json'
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        extra = EXTRA_OF.get(module.split(".")[0])
        hint = f"pip install 'amnl[{extra}]'" if extra else f"pip install {module}"
        what = f" for {purpose}" if purpose else ""
        raise MissingExtraError(f"{module} is needed{what}: {hint}") from exc
