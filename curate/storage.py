"""Where files live: a local path (pathlib and os, as before) or an object-store URL (fsspec).

INPUTs and `--out` may be URLs (`s3://bucket/work`, `gs://...`, any fsspec protocol whose
backend is installed). `as_path` turns a location into a path object: a local one stays a
`pathlib.Path`; a URL becomes a `upath.UPath`, which answers the same `/`, `.name`, `.parent`,
`.exists()`, `.read_text()`, `.glob()` and `.unlink()` through fsspec. The rest of the pipeline
uses those, and this module for the few things an object store does differently:

- Atomic writes. An object store has no rename, but one PUT (or one completed multipart upload)
  makes an object appear whole or not at all. `write_atomic` therefore writes into a local
  temporary file and uploads it with a single put; locally it writes a temporary file beside the
  target and renames it. Either way a reader, or a run killed at any instant, never sees half a
  file, and a `.done` marker written after its parts is never ahead of them.
- No folders. `makedirs` does nothing on an object store (asking fsspec to create one can create
  a bucket, which a typo in `--out` should never do).
- No cached listings. Worker processes, possibly on other machines, write markers while the
  main process looks for them; a cached listing would hide them.
- Seekable reads. FFmpeg needs a seekable file, so `local_copy` downloads a video into a
  temporary file for as long as it is needed.

fsspec, universal_pathlib and the backends (s3fs, gcsfs, ...) are imported only when a URL is
met, so local runs start as fast as before. Credentials and endpoints come from wherever the
backend reads them (for S3: the AWS_* environment variables, ~/.aws, instance roles).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from curate.errors import StorageError

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
_THREADS = 16  # concurrent requests when many small objects are read (parts, input samples)


def is_url(path) -> bool:
    """Whether `path` names an object in a store (`proto://...`) rather than a local file."""
    return not isinstance(path, Path) and bool(_URL.match(str(path)))


def url_protocol(path) -> str:
    """The protocol of a URL (`s3` for `s3://bucket/key`)."""
    return str(path).split("://", 1)[0].lower()


def as_path(path):
    """`path` as a path object: a `pathlib.Path` for a local path, a `UPath` for a URL."""
    if not is_url(path):
        return Path(path)
    if not isinstance(path, str):
        return path  # already a UPath
    from upath import UPath

    try:
        # Listings are never cached: markers written by other processes must show up at once.
        url = UPath(path, use_listings_cache=False)
        _ = url.fs  # resolve the backend now, so a missing one is an error here and not in a worker
    except ImportError as exc:
        extra = " (pip install 'vidcurate[s3]')" if url_protocol(path) in ("s3", "s3a") else ""
        raise StorageError(f"cannot use {path}: {exc}{extra}") from None
    except ValueError as exc:
        raise StorageError(f"cannot use {path}: {exc}") from None
    return url


def check_reachable(path) -> None:
    """Raise StorageError unless the bucket (or root) of a URL exists and can be read: a wrong
    name or missing credentials then stop a command at once, in one line. Local paths pass."""
    if not is_url(path):
        return
    url = as_path(path)
    root = url.path.strip("/").split("/")[0]
    if not root:
        return
    with _reported(str(path)):
        try:
            url.fs.info(root)  # unlike exists(), this says why it fails (credentials, endpoint)
        except FileNotFoundError:
            raise StorageError(f"no bucket {root!r} for {path} (create it first, or check its name)") from None


# -- writing ------------------------------------------------------------------------------------


def makedirs(path) -> None:
    """Create a local folder and its parents; nothing to do on an object store."""
    if not is_url(path):
        Path(path).mkdir(parents=True, exist_ok=True)


def write_atomic(path, write: Callable, mode: str = "wb") -> int:
    """Write a file atomically with `write(f)` (`f` opened with `mode`); return its size.

    Local: a temporary file in the same folder, fsync, then a rename over `path`. Object store:
    a local temporary file, then one upload (the object appears whole or not at all).
    """
    path = as_path(path)
    if is_url(path):
        return _upload(path, write, mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide manifests from other users
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
            size = f.tell()
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return size


def write_text_atomic(text: str, path) -> None:
    """The same discipline for small text files (markers, configs, index.json, the report)."""
    write_atomic(path, lambda f: f.write(text), "w")


def _upload(url, write: Callable, mode: str) -> int:
    # The temporary name keeps the target's suffix: s3fs guesses the Content-Type from it, so an
    # uploaded report opens as a web page.
    fd, tmp = tempfile.mkstemp(prefix="vidcurate-", suffix=url.suffix or ".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
        url.fs.put_file(tmp, url.path)
        return os.path.getsize(tmp)
    finally:
        os.unlink(tmp)


def copy_atomic(source, target) -> None:
    """Put a copy of `source` at `target` atomically; both in the same store. Locally a hard
    link (no space) where the file system allows it; on an object store a server-side copy."""
    source, target = as_path(source), as_path(target)
    if is_url(target):
        target.fs.copy(source.path, target.path)
        return
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:  # another file system: copy instead
        import shutil

        shutil.copyfile(source, tmp)
    os.replace(tmp, target)


# -- reading ------------------------------------------------------------------------------------


def read_parquet(path, columns: list[str] | None = None):
    """A parquet file as a pyarrow table (only `columns`, if given)."""
    import pyarrow.parquet as pq

    # One file, read as one file: `pq.read_table` goes through pyarrow.dataset, whose import
    # loads pandas (0.3 s of CPU in a split command that has no other use for it).
    path = as_path(path)
    if not is_url(path):
        with pq.ParquetFile(path) as parquet:
            return parquet.read(columns=columns)
    with path.open("rb") as f, pq.ParquetFile(f) as parquet:  # pyarrow seeks to the footer and the wanted columns: ranged reads
        return parquet.read(columns=columns)


def read_parquets(paths: list, columns: list[str] | None = None) -> list:
    """Many parquet files, in order. On an object store they are fetched concurrently: one at a
    time, thousands of small parts would take a round trip each."""
    if not any(is_url(p) for p in paths):
        return [read_parquet(p, columns) for p in paths]
    with ThreadPoolExecutor(_THREADS) as pool:
        return list(pool.map(lambda p: read_parquet(p, columns), paths))


def size(path) -> int:
    """The size of a file in bytes."""
    if not is_url(path):
        return os.path.getsize(path)
    url = as_path(path)
    return url.fs.size(url.path)


def read_ranges(path, ranges: list[tuple[int, int]]) -> list[bytes]:
    """The bytes of each (start, end) range of a file; a range past the end is cut short. On an
    object store these are ranged GETs, never a whole download."""
    if not is_url(path):
        chunks = []
        with open(path, "rb") as f:
            for start, end in ranges:
                f.seek(start)
                chunks.append(f.read(end - start))
        return chunks
    url = as_path(path)
    starts, ends = [s for s, _ in ranges], [e for _, e in ranges]
    return url.fs.cat_ranges([url.path] * len(ranges), starts, ends, on_error="raise")


def map_concurrently(function: Callable, items: list, remote: bool) -> list:
    """`[function(i) for i in items]`, in threads when `remote` (each call waits on the network)."""
    if not remote:
        return [function(item) for item in items]
    with ThreadPoolExecutor(_THREADS) as pool:
        return list(pool.map(function, items))


@contextmanager
def local_copy(path) -> Iterator[str]:
    """A local file name with the content of `path`: the path itself for a local file, else a
    temporary download, deleted on leaving the block. A file opened inside the block stays
    readable after it (POSIX keeps an unlinked file's data while it is open)."""
    if not is_url(path):
        yield str(path)
        return
    url = as_path(path)
    fd, tmp = tempfile.mkstemp(prefix="vidcurate-", suffix=url.suffix)
    os.close(fd)
    try:
        url.fs.get_file(url.path, tmp)
        yield tmp
    finally:
        os.unlink(tmp)


# -- finding inputs -----------------------------------------------------------------------------


def kind(path) -> str | None:
    """ "file", "dir" (a folder, or a prefix with objects under it) or None if nothing is there."""
    if not is_url(path):
        local = Path(path)
        return "dir" if local.is_dir() else "file" if local.is_file() else None
    url = as_path(path)
    with _reported(str(path)):
        try:
            found = url.fs.info(url.path)["type"]
        except FileNotFoundError:
            return None
    return "dir" if found == "directory" else "file"


def files_under(path, suffixes: frozenset[str]) -> list[str]:
    """Every file under a folder (recursively) whose suffix (lower case) is in `suffixes`, in
    path order: sorted by path components, as pathlib sorts, so a folder and a prefix holding
    the same files list them in the same order. Locally, symlinks to folders below `path` are not
    entered (rglob's rule; `glob` keeps it for `**`), so a link back up the tree cannot loop."""
    if not is_url(path):
        found = Path(path).rglob("*")
        return [str(p) for p in sorted(p for p in found if p.suffix.lower() in suffixes and p.is_file())]
    url = as_path(path)
    with _reported(str(path)):
        names = url.fs.find(url.path)
    names = [n for n in names if os.path.splitext(n)[1].lower() in suffixes]
    return [url.fs.unstrip_protocol(n) for n in sorted(names, key=lambda n: n.split("/"))]


def glob(pattern: str) -> tuple[list[str], list[str]]:
    """The files and the folders matching a glob pattern (`**` crosses folders), each sorted.

    Locally `**` never goes through a symlink to a folder, as `files_under` (pathlib's rglob)
    does not for a folder INPUT: a link back up the tree would make the search endless (the
    standard library's `glob` follows it). wcmatch's globstar does not follow links; names that
    start with a dot match only a pattern part that does, as with `glob.glob`."""
    if not is_url(pattern):
        from wcmatch import glob as wcglob

        matches = sorted(set(wcglob.glob(pattern, flags=wcglob.GLOBSTAR)))
        # A linked folder that `**` lists is not searched either (it may lead back up the tree).
        crossing = "**" in pattern
        folders = [m for m in matches if Path(m).is_dir() and not (crossing and Path(m).is_symlink())]
        return [m for m in matches if Path(m).is_file()], folders
    url = as_path(pattern)
    with _reported(pattern):
        found = url.fs.glob(url.path, detail=True)
    names = sorted(found)
    full = url.fs.unstrip_protocol
    return [full(n) for n in names if found[n]["type"] != "directory"], [full(n) for n in names if found[n]["type"] == "directory"]


@contextmanager
def _reported(location: str):
    """Turn a store's failures (no access, no endpoint, no credentials) into one-line errors.
    A missing object is not a failure: FileNotFoundError goes through for the caller to judge."""
    try:
        yield
    except (FileNotFoundError, StorageError):
        raise
    except Exception as exc:  # botocore, aiohttp, google-auth each raise their own types
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StorageError(f"cannot reach {location}: {reason}") from None
