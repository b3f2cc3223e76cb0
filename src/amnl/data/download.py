"""Fetch the public NASA C-MAPSS archive, verify it, and unpack it atomically.

The archive is a zip that holds the 12 text files either at its top, in a folder, or inside
one inner zip (NASA's portal wraps ``CMAPSSData.zip`` in another zip). Every file is checked
against the SHA-256 sums shipped with the package (``amnl/data/SHA256SUMS``) before anything
appears at the destination: files are unpacked into a temporary folder next to it and moved
into place only after all 12 have passed.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import IO

from amnl.data.cmapss import SUBSETS
from amnl.errors import DataError

logger = logging.getLogger(__name__)

#: NASA Prognostics Center of Excellence data repository, "Turbofan Engine Degradation
#: Simulation" (data.nasa.gov dataset ff5v-kuh6). The zip may wrap CMAPSSData.zip in another zip.
NASA_URL = "https://data.nasa.gov/download/ff5v-kuh6/application%2Fzip"
#: Zenodo record of the same files, the mirror NASA's ProgPy uses for its C-MAPSS loader.
ZENODO_URL = "https://zenodo.org/records/15346912/files/CMAPSSData.zip?download=1"
#: Tried in order when no URL is given; the first that yields a verified archive wins.
DEFAULT_URLS: tuple[str, ...] = (NASA_URL, ZENODO_URL)
#: Environment variable that overrides the URL (a single URL or a local path to the zip).
URL_ENV_VAR = "AMNL_DATA_URL"
#: The 12 files of the release, by sub-dataset.
FILE_NAMES: tuple[str, ...] = tuple(f"{kind}_{name}.txt" for name in SUBSETS
                                    for kind in ("train", "test", "RUL"))
#: Name of the checksum list, both inside the package and written next to the unpacked files.
CHECKSUMS_FILE = "SHA256SUMS"
#: Schemes we fetch from; ``file`` lets an offline user point at a zip already on disk.
ALLOWED_SCHEMES = ("http", "https", "file")
#: Guards against a runaway response or a zip bomb: the real archive is ~12 MB and the largest
#: member (train_FD004.txt) ~10 MB.
MAX_ARCHIVE_BYTES = 512 * 2**20
MAX_MEMBER_BYTES = 128 * 2**20
#: Read/write block size, and how often (bytes) progress is logged when no callback is given.
CHUNK_BYTES = 2**16
LOG_EVERY_BYTES = 4 * 2**20
#: Some servers refuse urllib's default agent string.
USER_AGENT = "amnl (C-MAPSS downloader; Python urllib)"

#: ``progress`` callback: called with (bytes received so far, total bytes or None if unknown).
ProgressCallback = Callable[[int, int | None], None]


def load_checksums() -> dict[str, str]:
    """The SHA-256 sums of the 12 C-MAPSS files shipped with the package.

    Returns:
        ``{file name: lowercase hex digest}`` for the 12 files.

    Raises:
        DataError: the packaged list is missing, malformed or incomplete.
    """
    try:
        text = resources.files("amnl.data").joinpath(CHECKSUMS_FILE).read_text("ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read the packaged checksum list ({exc})",
                        path=f"amnl/data/{CHECKSUMS_FILE}") from None
    sums = parse_checksums(text, path=f"amnl/data/{CHECKSUMS_FILE}")
    missing = [n for n in FILE_NAMES if n not in sums]
    if missing:
        raise DataError(f"no checksum for {', '.join(missing)}", path=f"amnl/data/{CHECKSUMS_FILE}")
    return sums


def parse_checksums(text: str, path: str = CHECKSUMS_FILE) -> dict[str, str]:
    """Parse ``sha256sum`` output (``<64 hex>  <name>``, optionally ``*<name>``).

    Args:
        text: the file's content.
        path: name used in error messages.

    Returns:
        ``{file name: lowercase hex digest}``.
    """
    sums: dict[str, str] = {}
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split(maxsplit=1)
        digest = parts[0].lower()
        if len(parts) != 2 or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise DataError(f"expected '<sha256>  <file name>', found {line!r}", path=path, line=i)
        sums[parts[1].strip().lstrip("*")] = digest
    return sums


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 digest of a file, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK_BYTES), b""):
            h.update(block)
    return h.hexdigest()


def _problems(data_dir: Path, checksums: Mapping[str, str]) -> list[str]:
    """One line per file that is missing or does not match its checksum."""
    out = []
    for name, expected in checksums.items():
        p = data_dir / name
        if not p.is_file():
            out.append(f"{name}: missing")
            continue
        actual = sha256_file(p)
        if actual != expected:
            out.append(f"{name}: expected sha256 {expected}, got {actual}")
    return out


def verify(data_dir: str | os.PathLike, *, checksums: Mapping[str, str] | None = None) -> None:
    """Check that ``data_dir`` holds the 12 C-MAPSS files with the expected SHA-256 sums.

    Args:
        data_dir: folder to check.
        checksums: ``{file name: hex digest}``; default: :func:`load_checksums`.

    Raises:
        DataError: listing every missing or mismatching file.
    """
    sums = dict(checksums) if checksums is not None else load_checksums()
    problems = _problems(Path(data_dir), sums)
    if problems:
        raise DataError("checksum verification failed:\n  " + "\n  ".join(problems),
                        path=str(data_dir))


def _candidate_urls(url: str | None) -> list[str]:
    if url is None:
        url = os.environ.get(URL_ENV_VAR) or None
    if url is None:
        return list(DEFAULT_URLS)
    # A plain path to a zip already on disk is accepted as well as a URL.
    if "://" not in url:
        return [Path(url).expanduser().resolve().as_uri()]
    return [url]


def _why(exc: BaseException) -> str:
    """An exception's message, or its type name when the message is empty (e.g. timeouts)."""
    return str(exc) or type(exc).__name__


def _fetch(url: str, out: IO[bytes], *, timeout: float,
           progress: bool | ProgressCallback) -> int:
    """Stream ``url`` into ``out``; return the number of bytes written."""
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        raise DataError(f"unsupported URL scheme {scheme!r} in {url}; use one of "
                        f"{', '.join(ALLOWED_SCHEMES)}")
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)  # scheme checked above
    except urllib.error.HTTPError as exc:
        raise DataError(f"download failed: HTTP {exc.code} {exc.reason} from {url}") from None
    except urllib.error.URLError as exc:
        raise DataError(f"cannot reach {url}: {exc.reason}") from None
    except (TimeoutError, OSError, http.client.HTTPException) as exc:
        raise DataError(f"cannot reach {url}: {_why(exc)}") from None
    with response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        if total is not None and total > MAX_ARCHIVE_BYTES:
            raise DataError(f"{url} is {total} bytes, more than the {MAX_ARCHIVE_BYTES} expected")
        logger.info("downloading %s (%s bytes)", url, total if total is not None else "unknown")
        done, next_log = 0, LOG_EVERY_BYTES
        try:
            while block := response.read(CHUNK_BYTES):
                out.write(block)
                done += len(block)
                if done > MAX_ARCHIVE_BYTES:
                    raise DataError(f"{url} sent more than {MAX_ARCHIVE_BYTES} bytes; not the "
                                    "C-MAPSS archive")
                if callable(progress):
                    progress(done, total)
                elif progress and done >= next_log:
                    logger.info("  %.1f MiB%s", done / 2**20,
                                f" of {total / 2**20:.1f} MiB" if total else "")
                    next_log += LOG_EVERY_BYTES
        except (TimeoutError, OSError, http.client.HTTPException) as exc:
            raise DataError(f"download from {url} interrupted after {done} bytes: "
                            f"{_why(exc)}") from None
    if total is not None and done != total:
        raise DataError(f"download from {url} truncated: got {done} of {total} bytes")
    if progress is True:
        logger.info("downloaded %d bytes from %s", done, url)
    return done


def _members(archive: zipfile.ZipFile, wanted: set[str]) -> dict[str, zipfile.ZipInfo]:
    """Map each wanted base name to its entry, matched case-insensitively at any depth.

    The first match wins; macOS resource forks (``__MACOSX/``) are skipped.
    """
    by_lower = {n.lower(): n for n in wanted}
    found: dict[str, zipfile.ZipInfo] = {}
    for info in archive.infolist():
        if info.is_dir() or info.filename.startswith("__MACOSX/"):
            continue
        name = by_lower.get(info.filename.replace("\\", "/").rsplit("/", 1)[-1].lower())
        if name is not None and name not in found:
            found[name] = info
    return found


def _copy_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, label: str) -> str:
    """Extract one entry to ``target`` (never via its stored path); return its SHA-256."""
    if info.file_size > MAX_MEMBER_BYTES:
        raise DataError(f"archive member {label} claims {info.file_size} bytes, more than "
                        f"{MAX_MEMBER_BYTES}")
    h = hashlib.sha256()
    try:
        with archive.open(info) as src, open(target, "wb") as dst:
            for block in iter(lambda: src.read(CHUNK_BYTES), b""):
                h.update(block)
                dst.write(block)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError,
            RuntimeError) as exc:  # RuntimeError: encrypted entry
        raise DataError(f"archive member {label} is corrupt ({exc})") from None
    return h.hexdigest()


def _unpack(archive_path: Path, out_dir: Path, checksums: Mapping[str, str], source: str) -> None:
    """Find the wanted files in the archive (or one inner zip), extract and verify them."""
    wanted = set(checksums)
    try:
        outer = zipfile.ZipFile(archive_path)
    except zipfile.BadZipFile:
        with open(archive_path, "rb") as f:
            head = f.read(32)
        raise DataError(f"{source} did not deliver a zip archive (it starts with {head!r})"
                        ) from None
    with outer:
        digests: dict[str, str] = {}
        for name, info in _members(outer, wanted).items():
            digests[name] = _copy_member(outer, info, out_dir / name, info.filename)
        # One level of nesting: NASA's download wraps CMAPSSData.zip inside another zip.
        inner_zips = [i for i in outer.infolist() if i.filename.lower().endswith(".zip")
                      and not i.filename.startswith("__MACOSX/")]
        for inner_info in inner_zips:
            if wanted <= digests.keys():
                break
            if inner_info.file_size > MAX_ARCHIVE_BYTES:
                raise DataError(f"inner archive {inner_info.filename} is too large")
            try:
                data = outer.read(inner_info)
                inner = zipfile.ZipFile(io.BytesIO(data))
            except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
                raise DataError(f"inner archive {inner_info.filename} is corrupt ({exc})") from None
            with inner:
                for name, info in _members(inner, wanted - digests.keys()).items():
                    label = f"{inner_info.filename}/{info.filename}"
                    digests[name] = _copy_member(inner, info, out_dir / name, label)
    missing = sorted(wanted - digests.keys())
    if missing:
        raise DataError(f"{source}: archive lacks {', '.join(missing)}")
    bad = [f"{n}: expected sha256 {checksums[n]}, got {digests[n]}"
           for n in sorted(wanted) if digests[n] != checksums[n]]
    if bad:
        raise DataError(f"{source}: checksum mismatch (archive corrupt or not the NASA "
                        "C-MAPSS release):\n  " + "\n  ".join(bad))


def _install(staged: Path, dest: Path, checksums: Mapping[str, str]) -> None:
    """Move verified files into place: one rename of the folder, or file by file if it exists."""
    if not dest.exists():
        try:
            os.replace(staged, dest)
            return
        except OSError:
            # Another process may have created it meanwhile: fall through to per-file moves.
            if not dest.is_dir():
                raise
    # An existing folder may hold the user's other files: replace only ours, each atomically.
    for name in (*checksums, CHECKSUMS_FILE):
        os.replace(staged / name, dest / name)


def download(dest_dir: str | os.PathLike, url: str | None = None, *,
             checksums: Mapping[str, str] | None = None, timeout: float = 60,
             progress: bool | ProgressCallback = True, force: bool = False) -> Path:
    """Download the C-MAPSS archive, verify all 12 files, and unpack them into ``dest_dir``.

    Nothing appears at ``dest_dir`` unless every file passed its SHA-256 check: the archive is
    fetched and unpacked in a temporary folder next to ``dest_dir`` and renamed into place at
    the end. If ``dest_dir`` already exists, only the 12 files (and ``SHA256SUMS``) in it are
    replaced; other files are left alone.

    Args:
        dest_dir: folder to put ``train_/test_/RUL_FD00x.txt`` in (created if missing).
        url: archive URL (or a local path to the zip). Default: ``$AMNL_DATA_URL``, else
            :data:`DEFAULT_URLS` in order, moving to the next one when a source fails.
        checksums: ``{file name: hex SHA-256}`` to verify against; default: the packaged list
            (:func:`load_checksums`). Tests pass their own for synthetic archives.
        timeout: seconds to wait for the server on connect and on each read.
        progress: True logs a byte counter at INFO level, False is silent, a callable is
            called as ``progress(bytes_so_far, total_or_None)`` after every block.
        force: download and replace even if ``dest_dir`` already holds verified files.

    Returns:
        ``dest_dir`` as a :class:`~pathlib.Path`.

    Raises:
        DataError: the download failed, the archive is not a zip, a file is missing from it, or
            a file's SHA-256 differs (the message names the file, expected and actual digest).

    Example:
        >>> download("~/.cache/amnl/CMAPSS")  # doctest: +SKIP
        PosixPath('/home/me/.cache/amnl/CMAPSS')
    """
    dest = Path(dest_dir).expanduser()
    sums = dict(checksums) if checksums is not None else load_checksums()
    if dest.exists() and not dest.is_dir():
        raise DataError("destination exists and is not a folder", path=str(dest))
    if dest.is_dir() and not force and not _problems(dest, sums):
        logger.info("%s already holds the verified C-MAPSS files", dest)
        return dest
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent))
    except OSError as exc:
        raise DataError(f"cannot create a folder next to the destination ({exc.strerror})",
                        path=str(dest)) from None
    try:
        errors = []
        sources = _candidate_urls(url)
        for k, source in enumerate(sources):
            staged = work / "files"
            shutil.rmtree(staged, ignore_errors=True)
            staged.mkdir()
            archive = work / "archive.zip"
            try:
                with open(archive, "wb") as f:
                    _fetch(source, f, timeout=timeout, progress=progress)
                _unpack(archive, staged, sums, source)
            except DataError as exc:
                errors.append(str(exc))
                if k + 1 < len(sources):
                    logger.warning("%s; trying %s", exc, sources[k + 1])
                continue
            except OSError as exc:  # local disk trouble: another mirror would not help
                raise DataError(f"cannot write the download ({exc})", path=str(work)) from None
            (staged / CHECKSUMS_FILE).write_text(
                "".join(f"{sums[n]}  {n}\n" for n in sorted(sums)), encoding="ascii")
            try:
                _install(staged, dest, sums)
            except OSError as exc:
                raise DataError(f"cannot move the verified files into place ({exc})",
                                path=str(dest)) from None
            logger.info("C-MAPSS files verified and unpacked into %s", dest)
            return dest
        if len(errors) == 1:
            raise DataError(errors[0])
        raise DataError("every source failed:\n" + "\n".join(f"- {e}" for e in errors))
    finally:
        shutil.rmtree(work, ignore_errors=True)
