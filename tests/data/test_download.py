"""amnl.data.download against a local HTTP server serving synthetic C-MAPSS archives."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import logging
import socket
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from amnl.cli.data import data_app
from amnl.data import download as dl
from amnl.data.download import (
    FILE_NAMES,
    download,
    load_checksums,
    parse_checksums,
    verify,
)
from amnl.data.synthetic import write_fleet
from amnl.errors import DataError

#: Tiny fleets so archives are a few tens of kB.
FLEET = {"n_train": 2, "n_test": 2, "min_life": 20, "max_life": 25}
#: Files inside the archive are stored uncompressed so a test can flip bytes of a member.
CORRUPT_MEMBER = "test_FD002.txt"


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests must not depend on the caller's environment (URL override or proxies).
    monkeypatch.delenv(dl.URL_ENV_VAR, raising=False)
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
                "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Content of the 12 synthetic files, by name."""
    d = tmp_path_factory.mktemp("fleet")
    for i, name in enumerate(["FD001", "FD002", "FD003", "FD004"]):
        write_fleet(d, name, seed=i, **FLEET)
    return {n: (d / n).read_bytes() for n in FILE_NAMES}


@pytest.fixture(scope="module")
def sums(files: dict[str, bytes]) -> dict[str, str]:
    return {n: hashlib.sha256(b).hexdigest() for n, b in files.items()}


def _zip(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def _flip_member_byte(archive: bytes, member: str) -> bytes:
    """Flip one byte in the middle of a stored member's data (its CRC no longer matches)."""
    with zipfile.ZipFile(io.BytesIO(archive)) as z:
        info = z.getinfo(member)
    # Local header: 30 fixed bytes + name + extra field, then the data.
    name_len = int.from_bytes(archive[info.header_offset + 26:info.header_offset + 28], "little")
    extra_len = int.from_bytes(archive[info.header_offset + 28:info.header_offset + 30], "little")
    pos = info.header_offset + 30 + name_len + extra_len + info.compress_size // 2
    return archive[:pos] + bytes([archive[pos] ^ 0xFF]) + archive[pos + 1:]


@pytest.fixture(scope="module")
def archives(files: dict[str, bytes]) -> dict[str, bytes]:
    """The archive variants the server offers, by URL path."""
    flat = _zip(files)
    stored = _zip(files, zipfile.ZIP_STORED)
    altered = dict(files)
    altered[CORRUPT_MEMBER] = files[CORRUPT_MEMBER].replace(b"1 ", b"7 ", 1)
    return {
        "flat.zip": flat,
        # Files in a folder, one name in another case, and a macOS resource fork to skip.
        "folder.zip": _zip({"__MACOSX/CMAPSSData/._train_FD001.txt": b"junk"}
                           | {f"CMAPSSData/{n if n != 'RUL_FD001.txt' else 'rul_fd001.txt'}": b
                              for n, b in files.items()}),
        # NASA's portal: an outer zip holding a readme and CMAPSSData.zip.
        "nested.zip": _zip({"Turbofan/readme.txt": b"see inner zip",
                            "Turbofan/CMAPSSData.zip": flat}),
        "crc.zip": _flip_member_byte(stored, CORRUPT_MEMBER),
        "altered.zip": _zip(altered),
        "incomplete.zip": _zip({n: b for n, b in files.items() if n != "RUL_FD004.txt"}),
        "page.html": b"<html><body>moved</body></html>",
    }


@pytest.fixture(scope="module")
def server(archives: dict[str, bytes]) -> Iterator[str]:
    """Base URL of a local HTTP server offering :func:`archives` (404 for anything else)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # http.server's naming
            if self.path == "/slow.zip":
                time.sleep(1.0)
            body = archives.get(self.path.lstrip("/"))
            if body is None:
                self.send_error(404, "Not Found")
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/zip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=functools.partial(httpd.serve_forever, 0.05), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _assert_installed(dest: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        assert (dest / name).read_bytes() == data, name
    assert parse_checksums((dest / "SHA256SUMS").read_text()).keys() == files.keys()


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir())


# --- success ---------------------------------------------------------------------------------

@pytest.mark.parametrize("archive", ["flat.zip", "folder.zip", "nested.zip"])
def test_download_and_verify(server: str, tmp_path: Path, files: dict[str, bytes],
                             sums: dict[str, str], archive: str) -> None:
    dest = tmp_path / "cache" / "CMAPSS"
    assert download(dest, f"{server}/{archive}", checksums=sums, progress=False) == dest
    _assert_installed(dest, files)
    assert _leftovers(dest.parent) == ["CMAPSS"]  # no temporary folder left behind
    verify(dest, checksums=sums)


def test_valid_destination_returns_early(server: str, tmp_path: Path,
                                         sums: dict[str, str]) -> None:
    dest = download(tmp_path / "d", f"{server}/flat.zip", checksums=sums, progress=False)
    # A second call would fail on this URL if it fetched anything.
    assert download(dest, f"{server}/missing.zip", checksums=sums, progress=False) == dest
    with pytest.raises(DataError, match="404"):
        download(dest, f"{server}/missing.zip", checksums=sums, progress=False, force=True)
    verify(dest, checksums=sums)


def test_existing_folder_keeps_other_files(server: str, tmp_path: Path, files: dict[str, bytes],
                                           sums: dict[str, str]) -> None:
    dest = tmp_path / "d"
    dest.mkdir()
    (dest / "notes.txt").write_text("mine")
    (dest / "train_FD001.txt").write_text("stale partial file")
    download(dest, f"{server}/flat.zip", checksums=sums, progress=False)
    _assert_installed(dest, files)
    assert (dest / "notes.txt").read_text() == "mine"


def test_url_from_environment(server: str, tmp_path: Path, files: dict[str, bytes],
                              sums: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(dl.URL_ENV_VAR, f"{server}/nested.zip")
    _assert_installed(download(tmp_path / "d", checksums=sums, progress=False), files)


def test_local_zip_path(tmp_path: Path, archives: dict[str, bytes], files: dict[str, bytes],
                        sums: dict[str, str]) -> None:
    zip_path = tmp_path / "CMAPSSData.zip"
    zip_path.write_bytes(archives["flat.zip"])
    _assert_installed(download(tmp_path / "d", str(zip_path), checksums=sums, progress=False),
                      files)


def test_falls_back_to_mirror(server: str, tmp_path: Path, files: dict[str, bytes],
                              sums: dict[str, str], monkeypatch: pytest.MonkeyPatch,
                              caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(dl, "DEFAULT_URLS", (f"{server}/gone.zip", f"{server}/page.html",
                                             f"{server}/flat.zip"))
    with caplog.at_level(logging.WARNING, logger=dl.__name__):
        _assert_installed(download(tmp_path / "d", checksums=sums, progress=False), files)
    assert "404" in caplog.text and "not deliver a zip" in caplog.text


def test_progress(server: str, tmp_path: Path, archives: dict[str, bytes], sums: dict[str, str],
                  caplog: pytest.LogCaptureFixture) -> None:
    calls: list[tuple[int, int | None]] = []
    download(tmp_path / "a", f"{server}/flat.zip", checksums=sums,
             progress=lambda done, total: calls.append((done, total)))
    size = len(archives["flat.zip"])
    assert calls[-1] == (size, size)
    with caplog.at_level(logging.INFO, logger=dl.__name__):
        download(tmp_path / "b", f"{server}/flat.zip", checksums=sums, progress=False)
        assert "downloaded" not in caplog.text
        download(tmp_path / "c", f"{server}/flat.zip", checksums=sums, progress=True)
        assert f"downloaded {size} bytes" in caplog.text


# --- failures leave nothing behind ---------------------------------------------------------------

def test_corrupt_member_crc(server: str, tmp_path: Path, sums: dict[str, str]) -> None:
    dest = tmp_path / "d"
    with pytest.raises(DataError, match=f"archive member {CORRUPT_MEMBER} is corrupt"):
        download(dest, f"{server}/crc.zip", checksums=sums, progress=False)
    assert not dest.exists()
    assert _leftovers(tmp_path) == []


def test_checksum_mismatch_names_file_and_hashes(server: str, tmp_path: Path,
                                                 archives: dict[str, bytes],
                                                 sums: dict[str, str]) -> None:
    dest = tmp_path / "d"
    with pytest.raises(DataError) as info:
        download(dest, f"{server}/altered.zip", checksums=sums, progress=False)
    with zipfile.ZipFile(io.BytesIO(archives["altered.zip"])) as z:
        actual = hashlib.sha256(z.read(CORRUPT_MEMBER)).hexdigest()
    msg = str(info.value)
    assert f"{CORRUPT_MEMBER}: expected sha256 {sums[CORRUPT_MEMBER]}, got {actual}" in msg
    assert "train_FD001.txt" not in msg  # only the failing file is named
    assert not dest.exists() and _leftovers(tmp_path) == []


def test_failure_leaves_existing_folder_untouched(server: str, tmp_path: Path,
                                                  sums: dict[str, str]) -> None:
    dest = tmp_path / "d"
    dest.mkdir()
    (dest / "train_FD001.txt").write_text("old")
    with pytest.raises(DataError):
        download(dest, f"{server}/altered.zip", checksums=sums, progress=False)
    assert _leftovers(dest) == ["train_FD001.txt"]
    assert (dest / "train_FD001.txt").read_text() == "old"
    assert _leftovers(tmp_path) == ["d"]


def test_missing_member(server: str, tmp_path: Path, sums: dict[str, str]) -> None:
    with pytest.raises(DataError, match="archive lacks RUL_FD004.txt"):
        download(tmp_path / "d", f"{server}/incomplete.zip", checksums=sums, progress=False)
    assert _leftovers(tmp_path) == []


def test_http_404(server: str, tmp_path: Path, sums: dict[str, str]) -> None:
    url = f"{server}/no/such/archive.zip"
    with pytest.raises(DataError, match=f"HTTP 404 Not Found from {url}"):
        download(tmp_path / "d", url, checksums=sums, progress=False)
    assert _leftovers(tmp_path) == []


def test_not_a_zip(server: str, tmp_path: Path, sums: dict[str, str]) -> None:
    with pytest.raises(DataError, match="did not deliver a zip archive .*<html>"):
        download(tmp_path / "d", f"{server}/page.html", checksums=sums, progress=False)


def test_connection_refused(tmp_path: Path, sums: dict[str, str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DataError, match=f"cannot reach http://127.0.0.1:{port}/x.zip"):
        download(tmp_path / "d", f"http://127.0.0.1:{port}/x.zip", checksums=sums,
                 progress=False, timeout=5)


def test_timeout(server: str, tmp_path: Path, sums: dict[str, str]) -> None:
    with pytest.raises(DataError, match="cannot reach .*/slow.zip: timed out"):
        download(tmp_path / "d", f"{server}/slow.zip", checksums=sums, progress=False,
                 timeout=0.2)
    assert _leftovers(tmp_path) == []


def test_all_mirrors_fail(server: str, tmp_path: Path, sums: dict[str, str],
                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dl, "DEFAULT_URLS", (f"{server}/a.zip", f"{server}/altered.zip"))
    with pytest.raises(DataError, match="every source failed") as info:
        download(tmp_path / "d", checksums=sums, progress=False)
    assert "HTTP 404" in str(info.value) and CORRUPT_MEMBER in str(info.value)
    assert _leftovers(tmp_path) == []


def test_unsupported_scheme(tmp_path: Path, sums: dict[str, str]) -> None:
    with pytest.raises(DataError, match="unsupported URL scheme 'ftp'"):
        download(tmp_path / "d", "ftp://example.org/x.zip", checksums=sums, progress=False)


def test_destination_is_a_file(tmp_path: Path, sums: dict[str, str]) -> None:
    (tmp_path / "d").write_text("x")
    with pytest.raises(DataError, match="not a folder"):
        download(tmp_path / "d", "http://127.0.0.1:9/x.zip", checksums=sums, progress=False)


# --- packaged checksums, CLI ---------------------------------------------------------------------

def test_packaged_checksums_cover_the_12_files() -> None:
    sums = load_checksums()
    assert sorted(sums) == sorted(FILE_NAMES) and len(FILE_NAMES) == 12
    assert all(len(h) == 64 for h in sums.values())


def test_parse_checksums_rejects_garbage() -> None:
    with pytest.raises(DataError, match="SUMS:2"):
        parse_checksums(f"{'a' * 64}  x.txt\nnot a checksum line\n", path="SUMS")


def test_cli_download(server: str, tmp_path: Path, files: dict[str, bytes],
                      sums: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dl, "load_checksums", lambda: sums)
    dest = tmp_path / "d"
    runner = CliRunner()
    ok = runner.invoke(data_app, ["download", "--data-dir", str(dest), "--url",
                                  f"{server}/nested.zip"])
    assert ok.exit_code == 0, ok.output
    assert f"verified in {dest}" in ok.stdout
    _assert_installed(dest, files)
    bad = runner.invoke(data_app, ["download", "--data-dir", str(tmp_path / "e"), "--url",
                                   f"{server}/nope.zip"])
    assert bad.exit_code == 2
    assert bad.stderr.startswith("error: ") and "HTTP 404" in bad.stderr
    assert "Traceback" not in bad.output
    assert not (tmp_path / "e").exists()
