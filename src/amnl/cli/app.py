"""The ``amnl`` command line: each command parses options, builds a config and calls one
library function. User errors (:class:`amnl.errors.AmnlError`) print one line and exit with
code 2; anything else is a bug and shows its traceback.

One module per verb group, each with a ``register(app)``:

=====================  ===================================================
:mod:`.data`           ``amnl data download``, ``amnl data check``
:mod:`.info`           ``amnl info``
:mod:`.train`          ``amnl train``, ``amnl distill-targets``
:mod:`.evaluate`       ``amnl evaluate``, ``amnl predict``
:mod:`.export`         ``amnl export``
:mod:`.bench`          ``amnl bench``
:mod:`.profile`        ``amnl profile``, ``amnl plan``
:mod:`.serve`          ``amnl serve``
:mod:`.score`          ``amnl score``
=====================  ===================================================

Shared options (the model source, the data folder, the inference settings) are declared once
in :mod:`.options`.
"""

from __future__ import annotations

from typing import Annotated

import typer

from amnl.cli import bench, evaluate, export, info, profile, score, serve, train
from amnl.cli.data import data_app
from amnl.cli.options import HELP_LAYOUT

app = typer.Typer(name="amnl", no_args_is_help=True, add_completion=False, **HELP_LAYOUT,
                  help="Remaining useful life and health state for machine fleets (AMNL, C-MAPSS).")
app.add_typer(data_app, name="data")


def _version(value: bool) -> None:
    if value:
        from amnl import __version__

        typer.echo(f"amnl {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
          ) -> None:
    """Remaining useful life and health state for machine fleets (AMNL, C-MAPSS)."""
for module in (info, train, evaluate, export, bench, profile, serve, score):
    module.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
