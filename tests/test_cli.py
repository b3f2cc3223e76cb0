"""The CLI end to end on a synthetic fleet: train -> evaluate -> predict, and bad input."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from amnl.cli.app import app
from amnl.data.synthetic import write_fleet

runner = CliRunner()
REPO = __import__("pathlib").Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    data = root / "data"
    write_fleet(data, "FD001", n_train=10, n_test=5, seed=2)
    run = root / "run"
    res = runner.invoke(app, ["train", "--dataset", "FD001", "--data-dir", str(data), "--config",
                              str(REPO / "configs" / "tiny.json"), "--out", str(run),
                              "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "validation RMSE" in res.output
    # without a bar, one line per epoch on stderr, and the precision chosen, with why
    assert "epoch 1: loss" in res.stderr and "training precision: " in res.stderr
    return data, run


def test_help_lists_commands():
    """Exactly these commands, each with a --help whose first line is its summary."""
    import typer

    group = typer.main.get_command(app)
    assert sorted(group.commands) == ["bench", "calibrate", "data", "distill-targets",
                                      "evaluate", "export", "info", "plan", "predict", "profile",
                                      "score", "serve", "train"]
    assert sorted(group.commands["data"].commands) == ["check", "download"]
    for name, cmd in group.commands.items():
        res = runner.invoke(app, [name, "--help"])
        assert res.exit_code == 0, (name, res.output)
        summary = (cmd.help or "").split("\n")[0].split()[:4]
        assert " ".join(summary) in " ".join(res.output.split()), name
    res = runner.invoke(app, ["evaluate", "--help"])
    for option in ("--runtime", "--precision", "--run", "--weights", "--all-windows"):
        assert option in res.output
    assert "--engine" not in res.output


def test_user_errors_are_one_line_bugs_keep_their_traceback(monkeypatch, tmp_path):
    """An AmnlError is one line on stderr and exit 2; any other exception is a bug: it is not
    dressed up as a user error."""
    from amnl.data import check as check_mod

    res = runner.invoke(app, ["data", "check", "--data-dir", str(tmp_path / "nowhere")])
    assert res.exit_code == 2 and res.stderr.startswith("error: ") and "nowhere" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1

    def buggy(*a, **k):
        raise ValueError("a bug, not a user error")

    monkeypatch.setattr(check_mod, "summarize", buggy)
    res = runner.invoke(app, ["data", "check", "--data-dir", str(tmp_path)])
    assert res.exit_code == 1 and isinstance(res.exception, ValueError)
    assert "error: a bug" not in res.output


def test_evaluate_scores_the_runs_own_subset(tmp_path):
    """--run without --dataset scores the subset the run was trained on; --dataset another one
    is done as asked, with a warning."""
    data = tmp_path / "data"
    write_fleet(data, "FD003", n_train=8, n_test=3, seed=4)
    write_fleet(data, "FD001", n_train=8, n_test=5, seed=4)
    run = tmp_path / "run3"
    res = runner.invoke(app, ["train", "--dataset", "FD003", "--data-dir", str(data), "--config",
                              str(REPO / "configs" / "tiny.json"), "--epochs", "1", "--out", str(run),
                              "--no-progress"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["evaluate", "--run", str(run), "--data-dir", str(data), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["dataset"] == "FD003" and json.loads(res.stdout)["n_engines"] == 3
    assert "trained on" not in res.stderr  # no other-subset warning (input warnings may show)
    res = runner.invoke(app, ["evaluate", "--run", str(run), "--dataset", "FD001", "--data-dir",
                              str(data), "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["n_engines"] == 5
    assert "trained on FD003; scoring it on FD001" in res.stderr


def test_size_with_config_is_an_error(tmp_path):
    res = runner.invoke(app, ["train", "--config", str(REPO / "configs" / "tiny.json"), "--size",
                              "base", "--data-dir", str(tmp_path), "--no-progress"])
    assert res.exit_code == 2 and "--size and --config cannot be combined" in res.stderr


def test_info_reports_parameters():
    res = runner.invoke(app, ["info"])
    assert res.exit_code == 0 and "3.50 M parameters" in res.output
    assert "3,496,900" in res.output


def test_evaluate_json_csv_and_plot(trained, tmp_path):
    data, run = trained
    res = runner.invoke(app, ["evaluate", "--dataset", "FD001", "--run", str(run), "--data-dir",
                              str(data), "--out", str(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    metrics = json.loads(res.stdout)
    rows = list(csv.DictReader((tmp_path / "predictions.csv").read_text().splitlines()))
    assert len(rows) == 5 == metrics["n_engines"]
    truth = np.minimum(np.loadtxt(data / "RUL_FD001.txt"), 125)
    pred = np.array([float(r["pred_rul"]) for r in rows])
    assert metrics["rmse"] == pytest.approx(np.sqrt(np.mean((pred - truth) ** 2)), abs=1e-3)
    assert (tmp_path / "predictions.png").stat().st_size > 0
    for key in ("mae", "nasa", "nasa_mean", "health_accuracy", "health_macro_f1", "rmse_raw"):
        assert key in metrics
    # the all-windows figure is an option: absent by default, there with --all-windows
    assert "all_windows_rmse" not in metrics
    res = runner.invoke(app, ["evaluate", "--dataset", "FD001", "--run", str(run), "--data-dir",
                              str(data), "--json", "--all-windows"])
    assert res.exit_code == 0, res.output
    every = json.loads(res.stdout)
    assert every["n_windows"] > every["n_engines"] and every["all_windows_rmse"] > 0
    assert every["rmse"] == metrics["rmse"] and every["model_id"] == metrics["model_id"]


def test_predict_text_and_csv(trained, tmp_path):
    data, run = trained
    res = runner.invoke(app, ["predict", "--input", str(data / "test_FD001.txt"), "--run", str(run)])
    assert res.exit_code == 0, res.output
    records = json.loads(res.stdout)
    assert [r["unit"] for r in records] == [1, 2, 3, 4, 5]
    assert all(r["rul"] >= 0 and r["health"] in ("healthy", "degrading", "critical") for r in records)
    assert all(abs(r["p_healthy"] + r["p_degrading"] + r["p_critical"] - 1) < 1e-3 for r in records)
    # The same histories as CSV with named columns give the same predictions.
    from amnl.data.cmapss import COLUMNS

    values = np.loadtxt(data / "test_FD001.txt")
    path = tmp_path / "h.csv"
    path.write_text(",".join(COLUMNS) + "\n" + "\n".join(",".join(f"{v:g}" for v in row) for row in values))
    res = runner.invoke(app, ["predict", "--input", str(path), "--run", str(run), "--format", "csv"])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert [float(r["rul"]) for r in rows] == pytest.approx([r["rul"] for r in records], abs=1e-3)


def test_predict_bad_input_names_file_and_line(trained, tmp_path):
    data, run = trained
    lines = (data / "test_FD001.txt").read_text().splitlines()
    cells = lines[6].split()
    cells[7] = "nan"
    lines[6] = " ".join(cells)
    bad = tmp_path / "bad.txt"
    bad.write_text("\n".join(lines) + "\n")
    res = runner.invoke(app, ["predict", "--input", str(bad), "--run", str(run)])
    assert res.exit_code == 2
    assert "bad.txt:7:col 8" in res.output and "Traceback" not in res.output
    csv_bad = tmp_path / "bad.csv"
    csv_bad.write_text("unit,cycle,setting_1\n1,1,0\n")
    res = runner.invoke(app, ["predict", "--input", str(csv_bad), "--run", str(run)])
    assert res.exit_code == 2 and "bad.csv:1" in res.output and "s_2" in res.output


def test_missing_run_and_unknown_subset(tmp_path):
    res = runner.invoke(app, ["evaluate", "--dataset", "FD009"])
    assert res.exit_code == 2 and "unknown subset" in res.output
    res = runner.invoke(app, ["evaluate", "--run", str(tmp_path), "--data-dir", str(tmp_path)])
    assert res.exit_code == 2 and "missing" in res.output


def test_train_keeps_loss_and_seed_of_config_unless_given(trained, tmp_path):
    """--config's train.loss, seed and threads hold unless --loss / --seed / --threads are given."""
    data, _ = trained
    cfg = json.loads((REPO / "configs" / "tiny.json").read_text())
    cfg["train"].update(loss="baseline", seed=3, epochs=1, threads=1)
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(cfg))
    threads = torch.get_num_threads()  # training sets the process-wide count; restore it
    try:
        for extra, expected in (([], ("baseline", 3, 1)),
                                (["--loss", "amnl", "--seed", "1", "--threads", "2", "--device",
                                  "auto"], ("amnl", 1, 2))):
            out = tmp_path / f"run{len(extra)}"
            res = runner.invoke(app, ["train", "--dataset", "FD001", "--data-dir", str(data),
                                      "--config", str(path), "--out", str(out), "--no-progress", *extra])
            assert res.exit_code == 0, res.output
            saved = json.loads((out / "config.json").read_text())["train"]
            assert (saved["loss"], saved["seed"], saved["threads"]) == expected
            assert saved["device"] == "cpu"  # auto is resolved: the config names the device used
    finally:
        torch.set_num_threads(threads)


def test_train_extra_train_rejects_bad_subsets(trained):
    data, _ = trained
    for bad, message in (("FD001", "extra_train must name other subsets"), ("FD009", "unknown subset")):
        res = runner.invoke(app, ["train", "--dataset", "FD001", "--data-dir", str(data),
                                  "--extra-train", bad, "--no-progress"])
        assert res.exit_code == 2 and message in res.output, res.output
    # a partner whose training file is missing: the error names it
    res = runner.invoke(app, ["train", "--dataset", "FD001", "--data-dir", str(data), "--config",
                              str(REPO / "configs" / "tiny.json"), "--extra-train", "FD003",
                              "--epochs", "1", "--no-progress", "--out", str(data.parent / "x")])
    assert res.exit_code == 2 and "train_FD003.txt" in res.output, res.output


def test_train_refuses_to_overwrite_a_run_unless_forced(trained, tmp_path):
    data, run = trained
    base = ["train", "--dataset", "FD001", "--data-dir", str(data), "--config",
            str(REPO / "configs" / "tiny.json"), "--epochs", "1", "--no-progress"]
    before = (run / "model.safetensors").read_bytes()
    res = runner.invoke(app, [*base, "--out", str(run)])
    assert res.exit_code == 2 and "already holds a finished run" in res.stderr
    assert (run / "model.safetensors").read_bytes() == before  # nothing touched
    copy = tmp_path / "again"
    assert runner.invoke(app, [*base, "--out", str(copy)]).exit_code == 0
    res = runner.invoke(app, [*base, "--out", str(copy), "--force"])
    assert res.exit_code == 0, res.output
    (tmp_path / "file").write_text("x")
    res = runner.invoke(app, [*base, "--out", str(tmp_path / "file")])
    assert res.exit_code == 2 and "is a file, not a run directory" in res.stderr
    res = runner.invoke(app, [*base, "--out", str(tmp_path / "fp16"), "--precision", "fp16"])
    assert res.exit_code == 2 and "fp16 needs CUDA" in res.stderr
    assert not (tmp_path / "fp16").exists()  # refused before anything is written


def test_version_and_the_same_csv_numbers_everywhere(trained, tmp_path):
    from amnl import __version__

    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"amnl {__version__}"
    data, run = trained
    res = runner.invoke(app, ["predict", "--input", str(data / "test_FD001.txt"), "--run", str(run),
                              "--format", "csv"])
    assert res.exit_code == 0, res.output
    predicted = list(csv.DictReader(io.StringIO(res.stdout)))
    assert runner.invoke(app, ["evaluate", "--run", str(run), "--data-dir", str(data), "--out",
                               str(tmp_path)]).exit_code == 0
    evaluated = list(csv.DictReader((tmp_path / "predictions.csv").read_text().splitlines()))
    for p, e in zip(predicted, evaluated):
        assert p["rul"] == e["pred_rul"] and p["p_healthy"] == e["p_healthy"]
        assert len(p["p_critical"].split(".")[1]) == 5


def test_conflicting_model_options_are_refused_everywhere(trained):
    data, run = trained
    for cmd in (["predict", "--input", str(data / "test_FD001.txt")],
                ["evaluate", "--data-dir", str(data)], ["export", "--out", "x.onnx"]):
        res = runner.invoke(app, [*cmd, "--run", str(run), "--weights", "FD001"])
        assert res.exit_code == 2 and "give at most one of --run, --weights" in res.stderr, cmd


def test_export_names_its_file_by_precision(trained, tmp_path):
    """#26 item 18: an INT8 export under the FP32 name (or the reverse) is refused before any
    work; a folder --out gets the precision's own file, which predict then finds; a file of
    another name is honoured as given."""
    pytest.importorskip("onnxruntime")
    data, run = trained
    base = ["export", "--run", str(run), "--no-check"]
    res = runner.invoke(app, [*base, "--int8", "--out", str(tmp_path / "exp" / "model.onnx")])
    assert res.exit_code == 2 and "model.onnx is the fp32 file of an export folder" in res.stderr
    assert "model_int8.onnx" in res.stderr and not (tmp_path / "exp" / "model.onnx").exists()
    res = runner.invoke(app, [*base, "--out", str(tmp_path / "exp" / "model_int8.onnx")])
    assert res.exit_code == 2 and "is the int8 file" in res.stderr
    res = runner.invoke(app, [*base, "--out", str(tmp_path / "model.txt")])
    assert res.exit_code == 2 and "--out must be a folder or a .onnx file" in res.stderr

    res = runner.invoke(app, [*base, "--int8", "--out", str(tmp_path / "exp")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "exp" / "model_int8.onnx").is_file()
    assert not (tmp_path / "exp" / "model.onnx").exists()
    history = str(data / "test_FD001.txt")
    res = runner.invoke(app, ["predict", "--input", history, "--run", str(tmp_path / "exp"),
                              "--runtime", "onnx", "--precision", "int8"])
    assert res.exit_code == 0, res.output
    assert len(json.loads(res.stdout)) == 5
    # the folder holds the int8 export only: asking it for fp32 says so and what to do
    res = runner.invoke(app, ["predict", "--input", history, "--run", str(tmp_path / "exp"),
                              "--runtime", "onnx"])
    assert res.exit_code == 2
    assert "holds the int8 export (model_int8.onnx) but no model.onnx: pass --precision int8" \
        in res.stderr

    custom = tmp_path / "other" / "engine.onnx"
    assert runner.invoke(app, [*base, "--int8", "--out", str(custom)]).exit_code == 0
    res = runner.invoke(app, ["predict", "--input", history, "--run", str(custom),
                              "--runtime", "onnx"])
    assert res.exit_code == 2
    assert "is an int8 export, not fp32; pass --precision int8" in res.stderr
    res = runner.invoke(app, ["predict", "--input", history, "--run", str(custom),
                              "--runtime", "onnx", "--precision", "int8"])
    assert res.exit_code == 0, res.output


def test_calibrate_never_writes_into_the_package(tmp_path):
    """#26 item 18: `amnl calibrate` without --out would rewrite the bundled model's
    calibration inside the installed package: it is refused, and nothing there changes."""
    from amnl.rundir import CALIBRATION_FILE, DRIFT_FILE, bundled_dir

    folder = bundled_dir("FD001")
    before = {n: (folder / n).read_bytes() for n in (CALIBRATION_FILE, DRIFT_FILE)}
    for name in ("FD001", "FD003"):  # the bundled FD001 pools FD003's training engines
        write_fleet(tmp_path / "data", name, n_train=8, n_test=2, seed=5)
    for extra in ([], ["--weights", "FD001"]):
        res = runner.invoke(app, ["calibrate", "--data-dir", str(tmp_path / "data"), *extra])
        assert res.exit_code == 2, res.output
        assert "inside the amnl package" in res.stderr and "--out" in res.stderr
        assert len(res.stderr.strip().splitlines()) == 1
    assert {n: (folder / n).read_bytes() for n in before} == before
    out = tmp_path / "calibrated"
    res = runner.invoke(app, ["calibrate", "--data-dir", str(tmp_path / "data"), "--out",
                              str(out)])
    assert res.exit_code == 0, res.output
    assert (out / CALIBRATION_FILE).is_file() and (out / DRIFT_FILE).is_file()
    assert {n: (folder / n).read_bytes() for n in before} == before


def _all_commands():
    import typer

    group = typer.main.get_command(app)
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):
            yield from (([name, sub], c) for sub, c in cmd.commands.items())
        else:
            yield [name], cmd


def test_help_wraps_at_80_columns_and_keeps_every_word():
    """#26 item 20: on an 80-column terminal every option's whole help text is there, wrapped
    (not cut with an ellipsis, brackets such as amnl[export] not eaten as markup), and every
    command's whole summary is in the list."""
    import typer

    squeeze = "".join
    for path, cmd in _all_commands():
        res = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "80"}, terminal_width=80)
        assert res.exit_code == 0, (path, res.output)
        assert "…" not in res.output and "..." not in res.output, path
        flat = squeeze(res.output.split())
        for param in cmd.params:
            if getattr(param, "help", None):
                assert squeeze(param.help.split()) in flat, (path, param.name)
    res = runner.invoke(app, ["evaluate", "--help"], env={"COLUMNS": "80"}, terminal_width=80)
    assert "needs amnl[export]" in " ".join(res.output.split())
    res = runner.invoke(app, ["--help"], env={"COLUMNS": "80"}, terminal_width=80)
    flat = squeeze(res.output.split())
    for name, cmd in typer.main.get_command(app).commands.items():
        assert squeeze(cmd.get_short_help_str(limit=10_000).split()) in flat, name


def test_bench_writes_where_it_says_not_into_a_benchmarks_folder(tmp_path, monkeypatch):
    """#26 item 20: without --out, `amnl bench` wrote ./benchmarks/results/... of whatever
    folder it ran in; now amnl-bench-<time>.json in the current folder, its path printed."""
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["bench", "--random-init", "--size", "tiny", "--runtimes",
                              "torch:fp32", "--windows", "8", "--seconds", "0.02", "--no-rss",
                              "--threads", "1"])
    assert res.exit_code == 0, res.output
    assert not (tmp_path / "benchmarks").exists()
    [written] = tmp_path.glob("amnl-bench-*.json")
    assert f"wrote {written}" in res.output
    assert json.loads(written.read_text())["rows"]


def test_predict_says_what_a_file_that_is_not_csv_looks_like(trained, tmp_path):
    """#26 item 20: a semicolon CSV, a gzipped CSV, a TSV and a PNG named .csv all got "CSV
    header lacks column(s) ..."; each now gets one line saying what the file looks like."""
    import gzip

    from amnl.data.cmapss import COLUMNS

    data, run = trained
    values = np.loadtxt(data / "test_FD001.txt")
    rows = [",".join(COLUMNS), *(",".join(f"{v:g}" for v in r) for r in values)]
    text = "\n".join(rows) + "\n"
    cases = {"semicolon.csv": (text.replace(",", ";").encode(), "a semicolon-separated file"),
             "tab.csv": (text.replace(",", "\t").encode(), "a tab-separated file"),
             "tab.tsv": (text.replace(",", "\t").encode(), "a tab-separated file"),
             "gzipped.csv": (gzip.compress(text.encode()), "a gzip-compressed file"),
             "image.csv": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(200),
                           "a binary file (PNG image)")}
    for name, (content, looks) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        res = runner.invoke(app, ["predict", "--input", str(path), "--run", str(run)])
        assert res.exit_code == 2, (name, res.output)
        assert f"looks like {looks}" in res.stderr, (name, res.stderr)
        assert len(res.stderr.strip().splitlines()) == 1 and name in res.stderr
    (tmp_path / "good.csv").write_text(text)  # the same rows with commas are read
    res = runner.invoke(app, ["predict", "--input", str(tmp_path / "good.csv"), "--run", str(run)])
    assert res.exit_code == 0, res.output


def test_evaluate_without_data_says_where_to_get_it(tmp_path, monkeypatch):
    """#26 item 20: `amnl evaluate --dataset FD002` without the files said "file not found"
    and nothing else; it now names the missing files and how to provide them."""
    monkeypatch.setenv("AMNL_DATA_DIR", str(tmp_path / "nothing-here"))
    res = runner.invoke(app, ["evaluate", "--dataset", "FD002"])
    assert res.exit_code == 2, res.output
    [line] = res.stderr.strip().splitlines()
    assert "nothing-here: test_FD002.txt, RUL_FD002.txt not found (C-MAPSS FD002)" in line
    assert "--data-dir" in line and "`amnl data download`" in line and "AMNL_DATA_DIR" in line
    # a training command says the same about the training file
    res = runner.invoke(app, ["train", "--dataset", "FD002", "--config",
                              str(REPO / "configs" / "tiny.json"), "--no-progress", "--out",
                              str(tmp_path / "run")])
    assert res.exit_code == 2 and "train_FD002.txt not found" in res.stderr
    assert "`amnl data download`" in res.stderr
