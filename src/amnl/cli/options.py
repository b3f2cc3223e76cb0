"""What every command shares: option types declared once, the model source, the inference
settings, and one-line errors with exit code 2.

Library code raises :class:`amnl.errors.AmnlError` for user errors (bad files, settings,
models); :func:`run` turns those (and OS errors such as an unwritable ``--out``) into
``error: ...`` on stderr and exit code 2. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from amnl.config import DEVICES, MODEL_SIZES, RUNTIMES, InferenceConfig, model_size
from amnl.data.paths import ENV_VAR
from amnl.errors import AmnlError

T = TypeVar("T")


# -- errors -----------------------------------------------------------------------------------

def fail(message: str) -> typer.Exit:
    """Print ``error: message`` on stderr; return the exit (code 2) for the caller to raise."""
    typer.secho(f"error: {message}", err=True, fg="red")
    return typer.Exit(2)


def run(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call a library function, turning amnl's errors into a one-line message and exit code 2."""
    try:
        return fn(*args, **kwargs)
    except AmnlError as exc:
        raise fail(str(exc)) from None
    except OSError as exc:  # the user's files: an unwritable --out, a full disk
        where = f"{exc.filename}: " if exc.filename else ""
        raise fail(f"{where}{exc.strerror or exc}") from None


def check_out_file(out: Path, option: str) -> None:
    """Fail now, before any work, unless ``out`` can be written as a file (its folder is
    created)."""
    import os

    if out.is_dir():
        raise fail(f"{option} {out} is a folder; name the file to write")
    folder = out.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise fail(f"{option} {out}: cannot create {folder} ({exc.strerror})") from None
    if not os.access(folder, os.W_OK):
        raise fail(f"{option} {out}: {folder} is not writable")
    if not out.exists():  # as root, access() says yes to anything: try it
        try:
            out.open("x").close()
            out.unlink()
        except OSError as exc:
            raise fail(f"{option} {out}: cannot be written ({exc.strerror})") from None


def csv_list(text: str, name: str, cast: Callable[[str], T] = str) -> list[T]:
    """Parse a comma-separated option value (``1,8,32``), failing with the option's name."""
    try:
        values = [cast(v.strip()) for v in text.split(",") if v.strip()]
    except ValueError:
        raise fail(f"{name} must be a comma-separated list, got {text!r}") from None
    if not values:
        raise fail(f"{name} is empty")
    return values


# -- option types -----------------------------------------------------------------------------

#: Every Typer app's help layout: click's plain one, which wraps each line at the terminal's
#: width; rich's panels leave the help text a third of an 80-column terminal and cut a long
#: path or URL with an ellipsis.
class _Group(typer.core.TyperGroup):
    """A command group whose list gives each command's whole summary line, wrapped (click
    cuts it to the width left with "...")."""

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        rows = [(name, cmd.get_short_help_str(limit=10_000)) for name in self.list_commands(ctx)
                if (cmd := self.get_command(ctx, name)) is not None and not cmd.hidden]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


HELP_LAYOUT = {"rich_markup_mode": None, "cls": _Group}


DataDir = Annotated[Path | None, typer.Option(
    "--data-dir", help=f"Folder with the C-MAPSS files (default: ${ENV_VAR}, else "
                       "~/.cache/amnl/CMAPSS).", show_default=False)]
Dataset = Annotated[str, typer.Option("--dataset", "-d", help="Subset: FD001, FD002, FD003 or FD004.")]
RunDir = Annotated[Path | None, typer.Option(
    "--run", help="A run directory written by `amnl train` (or an exported folder from "
                  "`amnl export`, with --runtime onnx).")]
Weights = Annotated[str | None, typer.Option(
    "--weights", help="A bundled model: FD001..FD004 (default: the --dataset's where the command "
                      "has one, else FD001).")]
RandomInit = Annotated[bool, typer.Option(
    "--random-init", help="A randomly initialised model of --size (speed and memory do not "
                          "depend on the weights' values). Default when no model is bundled.")]
Size = Annotated[str, typer.Option(help=f"Model size for --random-init: {', '.join(MODEL_SIZES)}.")]
Runtime = Annotated[str, typer.Option(help=f"Inference runtime: {' or '.join(RUNTIMES)} "
                                           "(ONNX Runtime; needs amnl[export]).")]
Precision = Annotated[str, typer.Option(help="fp32, bf16, fp16 (CUDA) or int8 (torch); fp32 or "
                                             "int8 (onnx).")]
Device = Annotated[str, typer.Option(help=f"{', '.join(DEVICES)}.")]
Threads = Annotated[int, typer.Option(help="CPU threads (0 = the library's default).")]


# -- the model source -------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelSource:
    """Which model a command uses: a folder (run directory, bundled model or export), or a
    randomly initialised one of ``size``.

    Attributes:
        directory: the folder (None for a random model).
        size: the size of a random model (None otherwise).
        label: how reports name it (``bundled FD001``, ``run DIR``, ``random-init base``).
    """

    directory: Path | None
    size: str | None
    label: str

    @property
    def random(self) -> bool:
        return self.directory is None

    def rss_source(self) -> dict:
        """The same model for a fresh measuring process (:mod:`amnl.profiling.rss`)."""
        return {"size": self.size} if self.random else {"run": str(self.directory)}

    def load_model(self):
        """The FP32 network (random ones seeded with 0)."""
        if self.random:
            import torch

            from amnl.model.factory import create_model

            torch.manual_seed(0)
            return run(create_model, self.size)
        from amnl.rundir import load_run

        return run(load_run, self.directory)[2]


def model_source(run_dir: Path | None, weights: str | None, random_init: bool = False, *,
                 size: str = "base", default: str | None = "FD001") -> ModelSource:
    """The model of ``--run`` / ``--weights`` / ``--random-init`` (at most one), else the
    bundled ``default``, else (no bundled model, ``default`` None or missing) a random one.

    ``default=None`` means the command needs real weights: without a bundled model it fails.
    """
    from amnl.errors import ModelError
    from amnl.rundir import bundled_dir, resolve_source

    if sum([run_dir is not None, weights is not None, random_init]) > 1:
        raise fail("give at most one of --run, --weights and --random-init")
    if random_init:
        run(model_size, size)  # a known size, or one line saying which exist
        return ModelSource(None, size, f"random-init {size}")
    if run_dir is not None:
        return ModelSource(run(resolve_source, run_dir), None, f"run {run_dir}")
    name = weights or default or "FD001"
    try:
        return ModelSource(bundled_dir(name), None, f"bundled {name.upper()}")
    except ModelError as exc:
        if weights is not None or default is None:
            raise fail(str(exc)) from None
        return ModelSource(None, size, f"random-init {size} (no bundled model in this installation)")
    except AmnlError as exc:  # not a subset name
        raise fail(str(exc)) from None


def inference_config(runtime: str = "torch", precision: str = "fp32", device: str = "cpu",
                     threads: int = 0, **more: Any) -> InferenceConfig:
    """The :class:`InferenceConfig` of the shared options (one-line error when invalid)."""
    return run(InferenceConfig, runtime=runtime, precision=precision, device=device,
               threads=threads, **more)
