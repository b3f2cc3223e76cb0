"""Pieces shared by the CLI modules: one-line errors with exit code 2, and option types."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from amnl.errors import AmnlError

RunDir = Annotated[Path | None, typer.Option("--run", help="A run directory written by `amnl train`.")]


def fail(message: str) -> typer.Exit:
    """Print ``error: message`` on stderr; return the exit (code 2) for the caller to raise."""
    typer.secho(f"error: {message}", err=True, fg="red")
    return typer.Exit(2)


def run(fn, *args, **kwargs):
    """Call a library function, turning amnl's errors into a one-line message and exit code 2."""
    try:
        return fn(*args, **kwargs)
    except (AmnlError, FileNotFoundError, ValueError) as exc:
        raise fail(str(exc)) from None


def csv_list(text: str, name: str, cast=str) -> list:
    """Parse a comma-separated option value (``1,8,32``), failing with the option's name."""
    try:
        values = [cast(v.strip()) for v in text.split(",") if v.strip()]
    except ValueError:
        raise fail(f"{name} must be a comma-separated list, got {text!r}") from None
    if not values:
        raise fail(f"{name} is empty")
    return values
