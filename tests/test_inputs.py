"""INPUT expansion: files, directories, globs and list files, in a deterministic order."""

from __future__ import annotations

import os
import re
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest
from conftest import run_module

from curate.errors import InputError
from curate.inputs import collect_inputs, content_id


def touch(path: Path, data: bytes | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if data is not None else path.name.encode() * 10)
    return path


@pytest.fixture
def tree(tmp_path) -> Path:
    """Video files at several depths, next to files that are not videos."""
    root = tmp_path / "videos"
    for name in ["a.mp4", "b.MOV", "sub/c.mkv", "sub/deeper/d.webm", "sub/e.ts", "z/f.m4v"]:
        touch(root / name)
    for name in ["notes.txt", "list.csv", "cover.png", "sub/sound.m4a", "sub/sound.wav", "README", "sub/.mp4.part"]:
        touch(root / name)
    (root / "folder.mp4").mkdir()  # a directory named like a video is not a video
    return root


def paths(videos) -> list[str]:
    return [v.path for v in videos]


def test_directory_is_searched_recursively_for_video_extensions(tree):
    found = paths(collect_inputs([str(tree)]))
    relative = [os.path.relpath(p, tree) for p in found]
    assert sorted(relative) == sorted(["a.mp4", "b.MOV", "sub/c.mkv", "sub/deeper/d.webm", "sub/e.ts", "z/f.m4v"])
    assert found == sorted(found)  # a deterministic order


def test_single_file_is_taken_whatever_its_extension(tree):
    # A file named explicitly is the user's choice: it gets a row even if it is no video.
    assert paths(collect_inputs([str(tree / "cover.png")])) == [str(tree / "cover.png")]


def test_glob(tree):
    assert paths(collect_inputs([str(tree / "*.mp4")])) == [str(tree / "a.mp4")]
    recursive = paths(collect_inputs([str(tree / "**" / "*.mkv")]))
    assert recursive == [str(tree / "sub" / "c.mkv")]


def test_glob_matching_directories_searches_them(tree):
    found = paths(collect_inputs([str(tree / "su*")]))
    assert sorted(found) == sorted(str(tree / p) for p in ["sub/c.mkv", "sub/deeper/d.webm", "sub/e.ts"])


def test_glob_matching_nothing_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no files match"):
        collect_inputs([str(tmp_path / "*.mp4")])


def test_missing_path_is_an_input_error(tmp_path):
    missing = tmp_path / "nope.mp4"
    with pytest.raises(InputError, match=re.escape(str(missing))):
        collect_inputs([str(missing)])


def test_missing_path_among_good_ones_is_an_input_error(tree):
    with pytest.raises(InputError):
        collect_inputs([str(tree / "a.mp4"), str(tree / "missing.mp4")])


def test_empty_directory_gives_nothing(tmp_path):
    (tmp_path / "empty").mkdir()
    assert collect_inputs([str(tmp_path / "empty")]) == []


def test_txt_list_relative_to_its_folder(tree, tmp_path):
    lists = tmp_path / "lists"
    lists.mkdir()
    absolute = tree / "sub" / "c.mkv"
    (lists / "inputs.txt").write_text(f"# a comment\n../videos/a.mp4\n\n  ../videos/b.MOV  \n{absolute}\n")
    found = collect_inputs([str(lists / "inputs.txt")])
    assert [Path(p).resolve() for p in paths(found)] == [tree / "a.mp4", tree / "b.MOV", absolute]
    assert all(v.source_caption is None for v in found)
    # The list works the same from any working directory.
    cwd = os.getcwd()
    try:
        os.chdir(tree / "sub")
        again = collect_inputs([str(lists / "inputs.txt")])
    finally:
        os.chdir(cwd)
    assert [v.video_id for v in again] == [v.video_id for v in found]


def test_txt_list_with_windows_line_endings(tree, tmp_path):
    (tmp_path / "inputs.txt").write_bytes(f"{tree / 'a.mp4'}\r\n{tree / 'b.MOV'}\r\n".encode())
    assert paths(collect_inputs([str(tmp_path / "inputs.txt")])) == [str(tree / "a.mp4"), str(tree / "b.MOV")]


def test_txt_list_with_byte_order_mark(tree, tmp_path):
    (tmp_path / "inputs.txt").write_text(f"{tree / 'a.mp4'}\n{tree / 'b.MOV'}\n", encoding="utf-8-sig")
    assert paths(collect_inputs([str(tmp_path / "inputs.txt")])) == [str(tree / "a.mp4"), str(tree / "b.MOV")]


def test_csv_list_with_captions(tree, tmp_path):
    pd.DataFrame({"path": ["videos/a.mp4", "videos/b.MOV", "videos/sub/c.mkv"], "caption": ["a dog, running", None, "a cat"]}).to_csv(
        tmp_path / "inputs.csv", index=False
    )
    found = collect_inputs([str(tmp_path / "inputs.csv")])
    assert paths(found) == [str(tmp_path / "videos/a.mp4"), str(tmp_path / "videos/b.MOV"), str(tmp_path / "videos/sub/c.mkv")]
    assert [v.source_caption for v in found] == ["a dog, running", None, "a cat"]


def test_csv_list_without_caption_column(tree, tmp_path):
    pd.DataFrame({"path": [str(tree / "a.mp4")], "other": [1]}).to_csv(tmp_path / "inputs.csv", index=False)
    (video,) = collect_inputs([str(tmp_path / "inputs.csv")])
    assert video.path == str(tree / "a.mp4") and video.source_caption is None


def test_parquet_list(tree, tmp_path):
    pd.DataFrame({"path": [str(tree / "z/f.m4v"), "videos/a.mp4"], "caption": ["first", "second"]}).to_parquet(tmp_path / "inputs.parquet")
    found = collect_inputs([str(tmp_path / "inputs.parquet")])
    assert paths(found) == [str(tree / "z/f.m4v"), str(tmp_path / "videos/a.mp4")]
    assert [v.source_caption for v in found] == ["first", "second"]


def test_list_without_path_column_is_an_input_error(tmp_path):
    pd.DataFrame({"file": ["a.mp4"]}).to_csv(tmp_path / "inputs.csv", index=False)
    with pytest.raises(InputError, match="no 'path' column"):
        collect_inputs([str(tmp_path / "inputs.csv")])


def test_unreadable_list_is_an_input_error(tmp_path):
    (tmp_path / "inputs.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(InputError) as info:
        collect_inputs([str(tmp_path / "inputs.parquet")])
    assert "\n" not in str(info.value)


def test_same_path_twice_counts_once(tree):
    a = str(tree / "a.mp4")
    found = collect_inputs([a, str(tree), a])
    assert paths(found).count(a) == 1
    assert len(found) == 6


def test_same_file_under_the_same_name_elsewhere_is_marked_duplicate(tmp_path):
    first = touch(tmp_path / "one" / "clip.mp4", b"same bytes" * 100)
    second = touch(tmp_path / "two" / "clip.mp4", b"same bytes" * 100)
    a, b = collect_inputs([str(first), str(second)])
    assert a.duplicate_of is None
    assert b.duplicate_of == str(first)
    assert a.video_id != b.video_id  # still one row, with an id of its own, per input


def test_same_bytes_under_another_name_is_not_a_duplicate(tmp_path):
    first = touch(tmp_path / "one.mp4", b"same bytes" * 100)
    second = touch(tmp_path / "two.mp4", b"same bytes" * 100)
    a, b = collect_inputs([str(first), str(second)])
    assert a.duplicate_of is None and b.duplicate_of is None
    assert a.video_id != b.video_id


def test_video_id_is_deterministic_and_tracks_content(tmp_path):
    path = touch(tmp_path / "clip.mp4", b"x" * 300_000)
    first = collect_inputs([str(path)])[0].video_id
    assert re.fullmatch(r"[0-9a-f]{16}", first)
    assert collect_inputs([str(path)])[0].video_id == first == content_id(str(path))
    # The same bytes elsewhere under the same name: the same id (ids do not depend on folders).
    copy = touch(tmp_path / "elsewhere" / "clip.mp4", b"x" * 300_000)
    assert content_id(str(copy)) == first
    # One byte changed in the middle of the file: a new id, so stale results are never reused.
    data = bytearray(path.read_bytes())
    data[150_000] = ord("y")
    path.write_bytes(bytes(data))
    assert content_id(str(path)) != first


@pytest.fixture
def looped(tmp_path) -> Path:
    """Videos in a folder with a symlink `self` back to the folder itself."""
    root = tmp_path / "looped"
    touch(root / "a.mp4")
    touch(root / "sub" / "b.mp4")
    touch(root / "sub" / "deeper" / "c.mkv")
    (root / "self").symlink_to("../looped")
    (root / "sub" / "link.mp4").symlink_to("deeper/c.mkv")  # a link to a file is a file
    return root


def test_recursive_glob_does_not_follow_folder_symlinks(looped):
    expected = [str(looped / p) for p in ["a.mp4", "sub/b.mp4", "sub/link.mp4"]]
    assert paths(collect_inputs([str(looped / "**" / "*.mp4")])) == expected
    # The same files, in the same order, as the folder given as an INPUT.
    assert paths(collect_inputs([str(looped / "**")])) == paths(collect_inputs([str(looped)]))
    # A link to a folder that the pattern names is followed, once.
    assert paths(collect_inputs([str(looped / "self" / "*.mp4")])) == [str(looped / "self" / "a.mp4")]


def test_recursive_glob_over_symlink_loops_ends(looped, tmp_path):
    """The reported case, through the command line: with a second loop (`sub/up` to its parent)
    the glob used to explore an endless tree. The timeout only guards the test run."""
    (looped / "sub" / "up").symlink_to("..")
    result = run_module("split", str(looped / "**" / "*.mp4"), "--out", tmp_path / "out", "--quiet", timeout=60)
    assert result.returncode == 0, result.stderr
    videos = pd.read_parquet(tmp_path / "out" / "manifests" / "videos.parquet")
    assert sorted(videos.path) == [str(looped / p) for p in ["a.mp4", "sub/b.mp4", "sub/link.mp4"]]


def test_glob_keeps_hidden_names_out_unless_asked(looped):
    touch(looped / ".cache" / "d.mp4")
    touch(looped / ".e.mp4")
    assert str(looped / ".e.mp4") not in paths(collect_inputs([str(looped / "*.mp4")]))
    assert str(looped / ".cache" / "d.mp4") not in paths(collect_inputs([str(looped / "**" / "*.mp4")]))
    assert paths(collect_inputs([str(looped / ".*.mp4")])) == [str(looped / ".e.mp4")]


def test_gif_in_a_folder_is_an_input(tree):
    gif = touch(tree / "sub" / "loop.gif")
    touch(tree / "sub" / "still.GIF")
    found = paths(collect_inputs([str(tree)]))
    assert str(gif) in found and str(tree / "sub" / "still.GIF") in found
    assert str(gif) in paths(collect_inputs([str(tree / "**")]))


def write_gif(path: Path, num_frames: int = 48) -> None:
    """An animated GIF: a bright square moving over a dark background, 10 frames a second."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("gif", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "rgb8"
        for i in range(num_frames):
            pixels = np.full((48, 64, 3), 30, np.uint8)
            pixels[10:30, i % 44 : i % 44 + 20] = 220
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24").reformat(format="rgb8")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_gif_in_a_folder_is_split(tmp_path):
    write_gif(tmp_path / "videos" / "anim.gif")
    result = run_module("split", tmp_path / "videos", "--out", tmp_path / "out", "--quiet")
    assert result.returncode == 0, result.stderr
    videos = pd.read_parquet(tmp_path / "out" / "manifests" / "videos.parquet")
    assert videos.path.tolist() == [str(tmp_path / "videos" / "anim.gif")]
    assert videos.status.tolist() == ["ok"] and videos.num_frames.tolist() == [48]
