"""Exceptions raised by amnl. Every message says what is wrong and where.

Library code raises these for user errors (bad files, bad settings, missing models); the CLI
turns them into one line and exit code 2. Anything else is a bug and keeps its traceback.

``AmnlError`` is the root; ``DataError`` (input files), ``ConfigError`` (settings and options),
``ModelError`` (run directories and exports) and ``NotFittedError`` (a fitted object used
unfitted) are under it.
"""

from __future__ import annotations


class AmnlError(Exception):
    """Base class of every error amnl raises on purpose."""


class DataError(AmnlError, ValueError):
    """Input data is malformed: the message names the file, line and column where it applies.

    Example:
        ``train_FD001.txt:12:col 7 (s_2): 'abc' is not a number``
    """

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None,
                 column: int | None = None, row: int | None = None) -> None:
        where = ""
        if path is not None:
            where = str(path)
            if line is not None:
                where += f":{line}"
                if column is not None:
                    where += f":col {column}"
            where += ": "
        super().__init__(where + message)
        self.path = path
        self.line = line
        self.column = column
        self.row = row
        """The row of an in-memory batch the error is about (not in the message)."""


class ModelError(AmnlError):
    """A run directory, exported folder or bundled model is missing or inconsistent: the
    message names the folder and the missing file."""


class ConfigError(AmnlError, ValueError):
    """A setting or option is invalid: the message names the field or option and the allowed
    values.

    Example:
        ``train.precision must be one of ('fp32', 'bf16', 'fp16'), got 'fp8'``
    """


class NotFittedError(AmnlError, RuntimeError):
    """A fitted object (preprocessing, calibration) was used before ``fit``."""
