"""Turn the command line's INPUT arguments into a deterministic list of videos to process.

An INPUT is a video file, a directory (searched recursively), a glob, or a list file (`.txt` with
one path per line, `.csv`/`.parquet` with a `path` column and an optional `caption` column).
"""

from __future__ import annotations

import glob
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

VIDEO_EXTENSIONS = frozenset(
    ".mp4 .m4v .mov .mkv .webm .avi .mpg .mpeg .m2ts .mts .ts .wmv .flv .3gp .ogv .mxf .y4m".split()
)
LIST_EXTENSIONS = frozenset({".txt", ".csv", ".parquet"})
_SAMPLE_BYTES = 64 * 1024


class InputError(ValueError):
    """A user mistake on the command line, such as a path that does not exist."""


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
    first_path_by_id: dict[str, str] = {}
    videos = []
    for path, caption in _expand_all(args):
        if path in seen_paths:
            continue
        seen_paths.add(path)
        video_id = content_id(path)
        duplicate_of = first_path_by_id.setdefault(video_id, path)
        if duplicate_of != path:
            # Same bytes under the same name elsewhere: still one row per input, with an id of its own.
            video_id = hashlib.sha1(f"{video_id}\0{path}".encode()).hexdigest()[:16]
            videos.append(VideoInput(video_id, path, caption, duplicate_of=duplicate_of))
        else:
            videos.append(VideoInput(video_id, path, caption))
    return videos


def content_id(path: str) -> str:
    """A 16-hex-digit id from the file's name, size and sampled bytes: the same on any machine.

    Sampling the start, middle and end keeps this cheap on large files while still changing
    whenever a file is replaced by another one, so stale results are never reused.
    """
    digest = hashlib.sha1(os.path.basename(path).encode())
    try:
        size = os.path.getsize(path)
        digest.update(str(size).encode())
        with open(path, "rb") as f:
            for offset in sorted({0, max(0, size // 2 - _SAMPLE_BYTES // 2), max(0, size - _SAMPLE_BYTES)}):
                f.seek(offset)
                digest.update(f.read(_SAMPLE_BYTES))
    except OSError as exc:
        digest.update(f"unreadable:{type(exc).__name__}".encode())
    return digest.hexdigest()[:16]


def _expand_all(args) -> list[tuple[str, str | None]]:
    items: list[tuple[str, str | None]] = []
    for arg in args:
        items.extend(_expand(str(arg)))
    return items


def _expand(arg: str) -> list[tuple[str, str | None]]:
    path = Path(arg)
    if path.is_dir():
        return [(str(p), None) for p in _videos_under(path)]
    if path.is_file():
        if path.suffix.lower() in LIST_EXTENSIONS:
            return _read_list(path)
        return [(str(path), None)]
    if glob.has_magic(arg):
        matches = sorted(glob.glob(arg, recursive=True))
        if not matches:
            raise InputError(f"no files match {arg!r}")
        return [(m, None) for m in matches if Path(m).is_file()] + [
            (str(p), None) for m in matches if Path(m).is_dir() for p in _videos_under(Path(m))
        ]
    raise InputError(f"no such file or directory: {arg}")


def _videos_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file())


def _read_list(path: Path) -> list[tuple[str, str | None]]:
    """Read a list file; relative entries are relative to the list file's folder."""
    suffix = path.suffix.lower()
    if suffix == ".txt":
        lines = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
        rows = [(line, None) for line in lines if line and not line.startswith("#")]
    else:
        rows = _read_table(path)
    return [(str(Path(p) if Path(p).is_absolute() else path.parent / p), c) for p, c in rows]


def _read_table(path: Path) -> list[tuple[str, str | None]]:
    import pandas as pd  # only list inputs need pandas at this point

    try:
        table = pd.read_csv(path) if path.suffix.lower() == ".csv" else pd.read_parquet(path)
    except Exception as exc:  # any parse failure of a user's file is a user mistake
        raise InputError(f"cannot read list file {path}: {exc}".splitlines()[0]) from None
    if "path" not in table.columns:
        raise InputError(f"list file {path} has no 'path' column (columns: {', '.join(map(str, table.columns))})")
    captions = table["caption"] if "caption" in table.columns else [None] * len(table)
    return [
        (str(p), None if c is None or (isinstance(c, float) and c != c) else str(c))
        for p, c in zip(table["path"], captions)
        if isinstance(p, str) and p.strip()
    ]
