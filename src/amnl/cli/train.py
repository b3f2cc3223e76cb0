"""``amnl train`` and ``amnl distill-targets``; the training progress bar lives here."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from amnl.cli.options import DataDir, Dataset, check_out_file, fail, run

#: What ``--size`` defaults to without ``--config``.
DEFAULT_SIZE = "base"


class ProgressBar:
    """A rich progress bar over :class:`amnl.train.trainer.Progress` events: epoch, running
    loss, the latest validation score, ETA; one log line per epoch."""

    def __init__(self, score_key: str) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self.key, self.last, self.task = score_key, "", None
        self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                            MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                            TimeRemainingColumn(), transient=False)

    def __enter__(self) -> ProgressBar:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(*exc)

    def __call__(self, p) -> None:
        if self.task is None:
            self.task = self.bar.add_task("train", total=p.epochs * p.steps, info="")
        if p.event == "epoch_start":
            self.bar.update(self.task, description=f"epoch {p.epoch + 1}/{p.epochs}",
                            completed=p.epoch * p.steps)
        elif p.event == "step":
            self.bar.update(self.task, advance=1, info=f"loss {p.loss:.3g} {self.last}")
        elif p.event == "epoch_end":
            r = p.record
            # shown during the next epoch: say whose it is
            self.last = f"| epoch {r['epoch']} {self.key} {r[self.key]:.2f}"
            self.bar.console.log(epoch_line(r, self.key))


def epoch_line(r: dict, key: str) -> str:
    """One line per finished epoch (``*``: the best so far, whose weights are kept)."""
    return (f"epoch {r['epoch']}: loss {r['loss']:.3g} {key} {r[key]:.2f} lr {r['lr']:.2g} "
            f"({r['epoch_seconds']:.0f}s){' *' if r['best'] else ''}")


def train(
    dataset: Dataset = "FD001",
    loss: Annotated[str | None, typer.Option(
        help="amnl, amnl-normalized, baseline, gaba or grace (default: the --config's, else amnl).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Maximum epochs.")] = None,
    seed: Annotated[int | None, typer.Option(
        help="Seed of weights and batch order (default: the --config's, else 0).")] = None,
    out: Annotated[Path | None, typer.Option(help="Run directory (default: runs/<dataset>-<loss>-s<seed>).")] = None,
    data_dir: DataDir = None,
    config: Annotated[Path | None, typer.Option(help="A config.json to start from (e.g. configs/fd001.json).")] = None,
    size: Annotated[str | None, typer.Option(
        help=f"Model size: base or tiny (default {DEFAULT_SIZE}); not with --config, whose "
             "model section fixes it.")] = None,
    precision: Annotated[str | None, typer.Option(
        help="Mixed precision: auto (bf16 where the device runs it natively, else fp32), fp32, "
             "bf16 or fp16 (CUDA). Default: the --config's, else auto.")] = None,
    grad_checkpoint: Annotated[bool, typer.Option(help="Recompute BiLSTM/attention in backward (less memory).")] = False,
    batch_size: Annotated[int | None, typer.Option(help="Training batch size.")] = None,
    threads: Annotated[int | None, typer.Option(
        help="CPU threads, 0 = torch default (default: the --config's, else 0).")] = None,
    device: Annotated[str | None, typer.Option(
        help="cpu, cuda or auto (default: the --config's, else cpu); saved in the config.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run in --out.")] = False,
    force: Annotated[bool, typer.Option(help="Overwrite a run already in --out.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    teacher_targets: Annotated[Path | None, typer.Option(
        help="Distil from teachers: a file from `amnl distill-targets`.")] = None,
    distill: Annotated[float | None, typer.Option(
        help="Weight of the teachers' mean in the RUL target, 0-1 (default 0.5 with --teacher-targets).")] = None,
    extra_train: Annotated[list[str] | None, typer.Option(
        help="Also train on this subset's training engines (its validation engines left out; "
             "validation stays on --dataset's), e.g. FD003 for FD001. Repeat for more.")] = None,
) -> None:
    """Train AMNL on one subset (validation engines come from the training file)."""
    from amnl.config import RunConfig, build_run_config
    from amnl.data.cmapss import check_subset_name
    from amnl.data.paths import resolve_data_dir
    from amnl.inference.runtime import set_threads
    from amnl.train.run import train_run

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    name = run(check_subset_name, dataset)
    base = run(RunConfig.load, config) if config else None
    extra = tuple(run(check_subset_name, n) for n in extra_train) if extra_train else None
    cfg = run(build_run_config, base, subset=name,
              size=size if base is not None else (size or DEFAULT_SIZE), extra_train=extra,
              loss=loss, seed=seed, epochs=epochs, precision=precision, batch_size=batch_size,
              threads=threads, device=device, distill=distill,
              grad_checkpoint=True if grad_checkpoint else None,
              teacher_targets=None if teacher_targets is None else str(teacher_targets))
    out = out or Path("runs") / f"{name}-{cfg.train.loss}-s{cfg.train.seed}"
    set_threads(cfg.train.threads)
    key = f"val_{cfg.train.select_metric}"
    if progress:
        with ProgressBar(key) as bar:
            summary = run(train_run, cfg, resolve_data_dir(data_dir), out, resume=resume,
                          force=force, callback=bar)
    else:  # no bar: still one line per epoch on stderr
        def lines(p) -> None:
            if p.event == "epoch_end":
                typer.echo(epoch_line(p.record, key), err=True)

        summary = run(train_run, cfg, resolve_data_dir(data_dir), out, resume=resume,
                      force=force, callback=lines)
    # chosen by train_run (an emulated bf16 is warned about before the first step)
    typer.echo(f"training precision: {summary['precision_reason']}", err=True)
    if summary["interrupted"]:
        typer.echo(f"interrupted after epoch {summary['epochs_run']}; resume with: "
                   f"amnl train --dataset {name} --out {out} --resume")
        raise typer.Exit(130)
    chosen = cfg.train.select_metric
    by = "" if chosen == "rmse" else f" ({chosen} {summary[key]:.2f}, the selection metric)"
    typer.echo(f"best epoch {summary['best_epoch']}: validation RMSE {summary['val_rmse']:.2f}{by}; "
               f"run directory {out}")


def distill_targets(
    run_dirs: Annotated[list[Path], typer.Option("--run", help="A teacher run directory (repeat for each).")],
    out: Annotated[Path, typer.Option(help="The targets file to write (.npz).")],
    data_dir: DataDir = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "cpu",
) -> None:
    """Average teacher runs' RUL predictions over their training file, for `amnl train --teacher-targets`."""
    import numpy as np

    from amnl.data.paths import resolve_data_dir
    from amnl.inference.runtime import pick_device
    from amnl.train.distill import compute_teacher_targets

    if not run_dirs:
        raise fail("give at least one --run")
    check_out_file(out, "--out")
    targets = run(compute_teacher_targets, [str(r) for r in run_dirs], resolve_data_dir(data_dir),
                  device=run(pick_device, device))
    out.parent.mkdir(parents=True, exist_ok=True)
    run(targets.save, out)
    typer.echo(f"{targets.subset}: {len(targets.rul)} windows, {len(targets.teachers)} teachers, "
               f"mean spread between teachers {float(np.mean(targets.spread)):.2f} cycles; "
               f"validation engines {targets.val_units.tolist()}; wrote {out}")


def register(app: typer.Typer) -> None:
    app.command()(train)
    app.command("distill-targets")(distill_targets)
