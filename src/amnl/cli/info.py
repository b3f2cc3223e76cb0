"""``amnl info``: parameters per component and weight bytes per precision."""

from __future__ import annotations

from typing import Annotated

import typer

from amnl.cli.options import Size, run


def info(
    size: Size = "base",
    use_settings: Annotated[bool, typer.Option(help="Count with the 3 settings as inputs (17).")] = False,
) -> None:
    """Parameter count per component and weight bytes in FP32 / FP16 / INT8 (MB = 10^6 bytes)."""
    from rich.console import Console
    from rich.table import Table

    from amnl.config import MB
    from amnl.model.factory import create_model

    model = run(create_model, size, in_features=17 if use_settings else 14)
    counts = model.parameter_counts()
    total = sum(counts.values())
    t = Table(title=f"AMNL ({size}, {model.config.in_features} inputs)")
    for col in ("component", "parameters", "FP32 MB", "FP16 MB", "INT8 MB"):
        t.add_column(col, justify="left" if col == "component" else "right")
    for name, n in [*counts.items(), ("total", total)]:
        t.add_row(name, f"{n:,}", f"{n * 4 / MB:.2f}", f"{n * 2 / MB:.2f}", f"{n / MB:.2f}")
    Console().print(t)
    typer.echo(f"{total / 1e6:.2f} M parameters")


def register(app: typer.Typer) -> None:
    app.command()(info)
