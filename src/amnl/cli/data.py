"""``amnl data ...``: fetch and check the C-MAPSS files. Mounted by ``amnl.cli`` as ``data``."""

from __future__ import annotations

from typing import Annotated, NoReturn

import typer

from amnl.cli.options import HELP_LAYOUT, DataDir, fail, run
from amnl.data.download import URL_ENV_VAR
from amnl.data.paths import resolve_data_dir
from amnl.errors import AmnlError

data_app = typer.Typer(help="Download and check the NASA C-MAPSS data files.",
                       no_args_is_help=True, **HELP_LAYOUT)

def _fail(exc: AmnlError) -> NoReturn:
    raise fail(str(exc))


@data_app.command()
def check(
    data_dir: DataDir = None,
    dataset: Annotated[list[str] | None, typer.Option(
        "--dataset", "-d", help="Check this subset only (FD001..FD004; repeat for more). "
                                "Default: every subset the folder holds.")] = None,
    verify: Annotated[bool, typer.Option(
        help="Check each file against NASA's published one (SHA-256, row and unit counts); "
             "--no-verify for files of your own in C-MAPSS format.")] = True,
) -> None:
    """Validate the C-MAPSS files there and print rows, units, cycles and operating conditions
    per file; subsets not in the folder are named, not an error."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from amnl.data.check import present_subsets, summarize
    from amnl.features.conditions import OperatingConditions

    folder = resolve_data_dir(data_dir)
    summaries = run(summarize, folder, dataset or None, verify=verify,
                    count_conditions=lambda s: OperatingConditions().fit(s).n_conditions_)
    table = Table(title=f"C-MAPSS files in {escape(str(folder))}",
                  caption="min/max: cycles per engine (RUL files: RUL values)")
    table.add_column("file", no_wrap=True)
    for name in ("rows", "units", "min", "max", "conditions"):
        table.add_column(name, justify="right")
    for s in summaries:
        table.add_row(s.file, str(s.rows), str(s.units), str(s.min_cycles), str(s.max_cycles),
                      "-" if s.n_conditions is None else str(s.n_conditions))
    console = Console()
    console.print(table)
    console.print(f"{len(summaries)} files OK" + (", each NASA's published copy (SHA-256, rows, "
                                                   "units)" if verify else " (not verified)"))
    absent = present_subsets(folder)[1]
    if not dataset and absent:
        console.print(f"not in this folder: {', '.join(absent)} (`amnl data download` fetches "
                      "all four)")


@data_app.command()
def download(
    data_dir: DataDir = None,
    url: Annotated[str | None, typer.Option(
        help=f"Archive URL or local zip (default: ${URL_ENV_VAR}, else NASA, then the Zenodo "
             "mirror).", show_default=False)] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Download again even if verified files are already there.")] = False,
) -> None:
    """Download the public C-MAPSS archive, verify SHA-256 sums, and unpack it."""
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    from amnl.data.download import download as fetch

    folder = resolve_data_dir(data_dir)
    console = Console(stderr=True)
    try:
        with Progress("downloading", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                      console=console, transient=True, disable=not console.is_terminal) as bar:
            task = bar.add_task("download", total=None)
            path = fetch(folder, url, force=force,
                         progress=lambda done, total: bar.update(task, completed=done,
                                                                 total=total))
    except AmnlError as exc:
        _fail(exc)
    typer.echo(f"C-MAPSS files verified in {path}")
