"""The ``amnl`` command line (:mod:`amnl.cli.app`)."""


def main() -> None:
    """Entry point of the ``amnl`` script."""
    from amnl.cli.app import main as run_app

    run_app()
