"""Turn the command line's INPUT arguments into a deterministic list of videos to process.

An INPUT is a video file, a directory (searched recursively), a glob, or a list file (`.txt` with
one path per line, `.csv`/`.parquet` with a `path` column and an optional `caption` column). Each
may be local or an object-store URL (`s3://bucket/videos/`: a prefix counts as a directory); the
file operations go through `curate.storage`.
"""

from __future__ import annotations

import glob
import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

from curate import storage
from curate.errors import InputError

VIDEO_EXTENSIONS = frozenset(".mp4 .m4v .mov .mkv .webm .avi .mpg .mpeg .m2ts .mts .ts .wmv .flv .3gp .ogv .mxf .y4m .gif".split())
LIST_EXTENSIONS = frozenset({".txt", ".csv", ".parquet"})
_SAMPLE_BYTES = 64 * 1024


@dataclass(frozen=True)
class VideoInput:
    """One input video: where it is, its deterministic id, and any caption that came with it."""

    video_id: str
    path: str
    source_caption: str | None = None
    duplicate_of: str | None = None  # path of an earlier input with the same content and name


def collect_inputs(args: list[str] | tuple[str, ...]) -> list[VideoInput]:
    """Expand INPUT arguments in order; the same file named twice counts once."""
    seen_paths: set[str] = set()
    items = []
    for path, caption in _expand_all(args):
        if path not in seen_paths:
            seen_paths.add(path)
            items.append((path, caption))
    # Objects in a store are hashed concurrently: each id costs a few round trips.
    ids = storage.map_concurrently(content_id, [path for path, _ in items], remote=any(storage.is_url(p) for p, _ in items))
    first_path_by_id: dict[str, str] = {}
    videos = []
    for (path, caption), video_id in zip(items, ids, strict=True):
        duplicate_of = first_path_by_id.setdefault(video_id, path)
        if duplicate_of != path:
            # Same bytes under the same name elsewhere: still one row per input, with an id of its own.
            video_id = hashlib.sha1(f"{video_id}\0{path}".encode()).hexdigest()[:16]
            videos.append(VideoInput(video_id, path, caption, duplicate_of=duplicate_of))
        else:
            videos.append(VideoInput(video_id, path, caption))
    return videos


def content_id(path: str) -> str:
    """A 16-hex-digit id from the file's name, size and sampled bytes: the same on any machine,
    and the same for a local file and an object-store copy of it (ranged reads, no download).

    Sampling the start, middle and end keeps this cheap on large files while still changing
    whenever a file is replaced by another one, so stale results are never reused.
    """
    digest = hashlib.sha1(os.path.basename(path).encode())
    try:
        size = storage.size(path)
        digest.update(str(size).encode())
        offsets = sorted({0, max(0, size // 2 - _SAMPLE_BYTES // 2), max(0, size - _SAMPLE_BYTES)})
        for chunk in storage.read_ranges(path, [(o, o + _SAMPLE_BYTES) for o in offsets] if size else []):
            digest.update(chunk)
    except OSError as exc:
        digest.update(f"unreadable:{type(exc).__name__}".encode())
    return digest.hexdigest()[:16]


def _expand_all(args) -> list[tuple[str, str | None]]:
    items: list[tuple[str, str | None]] = []
    for arg in args:
        items.extend(_expand(str(arg)))
    return items


def _expand(arg: str) -> list[tuple[str, str | None]]:
    """One INPUT: a local path or an object-store URL (a prefix counts as a folder)."""
    kind = storage.kind(arg)
    if kind == "dir":
        return [(p, None) for p in storage.files_under(arg, VIDEO_EXTENSIONS)]
    if kind == "file":
        if _suffix(arg) in LIST_EXTENSIONS:
            return _read_list(arg)
        return [(str(storage.as_path(arg)), None)]
    if glob.has_magic(arg):
        files, folders = storage.glob(arg)
        if not files and not folders:
            raise InputError(f"no files match {arg!r}")
        return [(m, None) for m in files] + [(p, None) for m in folders for p in storage.files_under(m, VIDEO_EXTENSIONS)]
    raise InputError(f"no such file or directory: {arg}")


def _suffix(path: str) -> str:
    return os.path.splitext(path)[1].lower()


def _read_list(path: str) -> list[tuple[str, str | None]]:
    """Read a list file (local or in an object store); relative entries are relative to the list
    file's folder, URLs and absolute paths are kept as they are."""
    location = storage.as_path(path)
    if _suffix(path) == ".txt":
        lines = [line.strip() for line in location.read_text(encoding="utf-8-sig").splitlines()]
        rows = [(line, None) for line in lines if line and not line.startswith("#")]
    else:
        rows = _read_table(location)
    return [(p if storage.is_url(p) else str(Path(p) if Path(p).is_absolute() else location.parent / p), c) for p, c in rows]


def _read_table(path) -> list[tuple[str, str | None]]:
    import pandas as pd  # only list inputs need pandas at this point

    source = io.BytesIO(path.read_bytes()) if storage.is_url(path) else path  # pandas reads bytes from any store
    try:
        table = pd.read_csv(source) if path.suffix.lower() == ".csv" else pd.read_parquet(source)
    except Exception as exc:  # any parse failure of a user's file is a user mistake
        raise InputError(f"cannot read list file {path}: {exc}".splitlines()[0]) from None
    if "path" not in table.columns:
        raise InputError(f"list file {path} has no 'path' column (columns: {', '.join(map(str, table.columns))})")
    captions = table["caption"] if "caption" in table.columns else [None] * len(table)
    return [
        (str(p), None if c is None or (isinstance(c, float) and c != c) else str(c))
        for p, c in zip(table["path"], captions, strict=True)
        if isinstance(p, str) and p.strip()
    ]
