"""`amnl serve` as a user starts it: a port in use, the demo's progress, defaults in one place."""

from __future__ import annotations

import os
import selectors
import socket
import subprocess
import sys
import time

import pytest

pytest.importorskip("fastapi")

from .pg import free_port


def amnl_serve(*args: str, **kw) -> list[str]:
    return [sys.executable, "-m", "amnl", "serve", *args]


def test_a_port_in_use_is_one_line_before_any_url(tmp_path):
    """#26 item 20: uvicorn printed the URL, then its own error and exit 3; the CLI now checks
    the port first: one line, exit 2, no URL, the model never loaded."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(amnl_serve("--port", str(port), "--db", str(tmp_path / "a.db")),
                              capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"error: port {port} on 127.0.0.1 is in use (another amnl serve?); stop it or pass --port"]
    assert "http://" not in done.stdout + done.stderr
    assert not (tmp_path / "a.db").exists()  # refused before the database was opened


def test_the_demo_logs_its_progress_at_info(tmp_path):
    """#26 item 20: the demo's normal progress is INFO (it was WARNING), and `amnl serve`
    shows amnl's INFO lines by default."""
    port = free_port()
    proc = subprocess.Popen(amnl_serve("--demo", "--demo-speed", "200", "--runtime", "torch",
                                       "--threads", "1", "--port", str(port), "--db",
                                       str(tmp_path / "demo.db")),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines: list[str] = []
    try:
        sel = selectors.DefaultSelector()
        sel.register(proc.stderr, selectors.EVENT_READ)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any("demo: replaying" in x for x in lines):
            if sel.select(timeout=1) and (line := proc.stderr.readline()):
                lines.append(line)
            elif proc.poll() is not None:
                break
    finally:
        proc.terminate()
        proc.wait(30)
    demo = [x for x in lines if "demo: replaying" in x]
    assert demo, "".join(lines)
    assert " INFO amnl.serve.demo: demo: replaying " in demo[0]
    assert not any("WARNING amnl.serve.demo" in x for x in lines)


def test_serve_options_default_to_the_settings():
    """One place for the service's defaults: every `amnl serve` option that is a ServeSettings
    field has that field's default."""
    import typer
    from dataclasses import MISSING, fields

    from amnl.cli.app import app
    from amnl.serve.settings import ServeSettings

    options = {p.name: p.default for p in typer.main.get_command(app).commands["serve"].params}
    checked = 0
    for f in fields(ServeSettings):
        if f.name in options and f.default is not MISSING:
            assert options[f.name] == f.default, f.name
            checked += 1
    assert checked >= 10
    assert options["runtime"] == ServeSettings().inference.runtime
