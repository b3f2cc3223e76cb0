"""Exceptions raised by amnl. Every message says what is wrong and where."""

from __future__ import annotations


class AmnlError(Exception):
    """Base class of every error amnl raises on purpose."""


class DataError(AmnlError, ValueError):
    """Input data is malformed: the message names the file, line and column where it applies.

    Example:
        ``train_FD001.txt:12:col 7 (s_2): 'abc' is not a number``
    """

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None,
                 column: int | None = None) -> None:
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


class ModelError(AmnlError):
    """A run directory or bundled model is missing or inconsistent."""
