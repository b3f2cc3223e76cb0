"""A throwaway PostgreSQL cluster in a folder, from Debian's package (tests and .ci/run).

    python tests/serve/pg.py start DIR   # prints the SQLAlchemy URL
    python tests/serve/pg.py stop DIR

As root, the server runs as the ``postgres`` user (PostgreSQL refuses root). It listens on
127.0.0.1 at a free port, with trust authentication for the ``amnl`` role only on loopback.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

URL_FILE = "url"


def bin_dir() -> Path | None:
    """Folder of initdb/pg_ctl, or None when PostgreSQL is not installed."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _as_owner(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(folder: str | os.PathLike) -> str:
    """initdb + pg_ctl start in ``folder``; returns the URL of database ``postgres`` as user
    ``amnl``. Raises RuntimeError with the server's words when it cannot start."""
    bins = bin_dir()
    if bins is None:
        raise RuntimeError("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    folder = Path(folder)
    data = folder / "data"
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
    port = free_port()
    steps = [
        [str(bins / "initdb"), "-D", str(data), "-U", "amnl", "-A", "trust", "-E", "UTF8",
         "--no-sync"],
        [str(bins / "pg_ctl"), "-D", str(data), "-l", str(folder / "log"), "-w", "-t", "60",
         "-o", f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=on", "start"],
    ]
    for cmd in steps:
        done = subprocess.run(_as_owner(cmd), capture_output=True, text=True, check=False)
        if done.returncode:
            log = (folder / "log").read_text() if (folder / "log").exists() else ""
            raise RuntimeError(f"{cmd[0]} failed: {done.stderr.strip()} {log[-1000:]}")
    url = f"postgresql+psycopg://amnl@127.0.0.1:{port}/postgres"
    (folder / URL_FILE).write_text(url)
    return url


def stop(folder: str | os.PathLike) -> None:
    bins = bin_dir()
    data = Path(folder) / "data"
    if bins and data.is_dir():
        subprocess.run(_as_owner([str(bins / "pg_ctl"), "-D", str(data), "-m", "immediate",
                                  "-w", "stop"]), capture_output=True, check=False)


if __name__ == "__main__":
    verb, where = sys.argv[1], sys.argv[2]
    if verb == "start":
        print(start(where))
    elif verb == "stop":
        stop(where)
    else:
        sys.exit(f"usage: {sys.argv[0]} start|stop DIR")
