"""Packing kept clips into WebDataset shards: read back with plain webdataset, frame-accurate
mp4s, byte-identical reruns, shards that follow caption and threshold changes, and SIGKILL
resumes that leave exactly the shards of an uninterrupted run."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from conftest import curate, kill_when, read_manifests, shown_frames

from curate.shards import Sample, member_bytes, plan_shards, sample_key, tar_size, write_shard
from curate.stages.pack.encoding import FramePicker, output_size

SHORT_SIDE = 72
PACK = ["--set", f"pack.short_side={SHORT_SIDE}", "pack.max_shard_samples=3"]

# -- pure parts -------------------------------------------------------------------------------


def test_output_sizes_keep_aspect_or_crop_and_stay_even():
    assert output_size(1280, 720, 480, None) == (854, 480, 854, 480)
    assert output_size(720, 1280, 480, None) == (480, 854, 480, 854)
    assert output_size(640, 360, 0, None) == (640, 360, 640, 360)
    assert output_size(1280, 720, 480, (256, 256)) == (456, 256, 256, 256)  # cover, then centre crop
    assert output_size(322, 182, 0, None) == (322, 182, 322, 182)
    assert output_size(321, 183, 0, None)[:2] == (320, 182)  # odd sizes: even, never larger


def test_small_pictures_are_never_scaled_up():
    assert output_size(17, 13, 480, None) == (16, 12, 16, 12)  # was packed at 628x480
    assert output_size(320, 180, 480, None) == (320, 180, 320, 180)
    assert output_size(200, 100, 0, (128, 128)) == (200, 100, 100, 100)  # the crop's shape, as large as it fits
    assert output_size(64, 36, 0, (128, 64)) == (64, 36, 64, 32)


def output_frames(times_s: list[float], duration_s: float, fps: float, source_fps: float) -> list[int]:
    """The source frame each output frame shows, as FramePicker picks them from timestamps."""
    picker, copies = FramePicker(duration_s, fps, source_fps), []
    copies = [picker.copies_before(t) for t in times_s[1:]] + [picker.copies_left()]
    return [i for i, n in enumerate(copies) for _ in range(n)]


def test_frames_are_picked_by_time_for_a_constant_rate():
    assert output_frames([i / 24 for i in range(5)], 5 / 24, 24.0, 24.0) == [0, 1, 2, 3, 4]
    assert output_frames([i / 30 for i in range(10)], 10 / 30, 15.0, 30.0) == [0, 2, 4, 6, 8]
    assert output_frames([i / 12 for i in range(3)], 3 / 12, 24.0, 12.0) == [0, 0, 1, 1, 2, 2]
    assert output_frames([i / 24 for i in range(48)], 2.0, 16.0, 24.0) == [int(j * 1.5) for j in range(32)]
    # Millisecond timestamps (Matroska) at the source's own rate: every frame once.
    assert output_frames([round(i / 24, 3) for i in range(48)], 2.0, 24.0, 24.0) == list(range(48))


def test_variable_frame_rate_keeps_real_time():
    """1 s at 30 fps, then 1 s at 10 fps, packed at 30 fps: 2 s of output, the slow frames repeated."""
    times = [i / 30 for i in range(30)] + [1 + i / 10 for i in range(10)]
    shown = output_frames(times, 2.0, 30.0, 30.0)
    assert len(shown) == 60
    assert shown[:30] == list(range(30)) and shown[30:] == [30 + i // 3 for i in range(30)]


def test_shards_close_at_size_or_count_with_at_least_one_sample():
    sizes = [member_bytes([4000, 50, 300])] * 7
    assert plan_shards(sizes, 0, 3) == [range(0, 3), range(3, 6), range(6, 7)]
    limit = 25_000
    by_size = plan_shards(sizes, limit, 0)
    assert [i for r in by_size for i in r] == list(range(7))  # in order, each sample once
    for shard, following in zip(by_size, by_size[1:], strict=False):  # full: the next sample would not fit
        assert tar_size(sum(sizes[i] for i in shard)) <= limit < tar_size(sum(sizes[i] for i in shard) + sizes[following[0]])
    assert plan_shards([10**9, 10], 1000, 0) == [range(0, 1), range(1, 2)]  # an oversize sample alone
    assert plan_shards([], 1000, 0) == []


def test_tar_size_is_predicted_and_bytes_repeat(tmp_path):
    samples = [Sample(f"k{i}", {"mp4": bytes(700 * i + 1), "txt": b"a cat", "json": b"{}"}) for i in range(4)]
    size = write_shard(tmp_path / "a.tar", samples)
    write_shard(tmp_path / "b.tar", samples)
    assert size == tar_size(sum(s.tar_bytes for s in samples))
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    with tarfile.open(tmp_path / "a.tar") as tar:
        members = tar.getmembers()
    assert [m.name for m in members[:3]] == ["k0.mp4", "k0.txt", "k0.json"]
    assert all(m.mtime == 0 and m.uid == 0 and m.mode == 0o644 for m in members)
    assert not list(tmp_path.glob(".*"))  # no temporary file left


@pytest.mark.parametrize(("clip_id", "key"), [("abc-000001-000020", "abc-000001-000020"), ("../x.y/z", "___x_y_z"), ("", "_")])
def test_keys_are_safe_file_names(clip_id, key):
    assert sample_key(clip_id) == key


# -- the command --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def split_out(tmp_path_factory, edited, motion, static) -> Path:
    """An output folder after split (every clip kept), never modified by the tests."""
    videos = tmp_path_factory.mktemp("pack_videos")
    for sample in (edited, motion, static):
        shutil.copy(sample.path, videos / sample.path.name)
    out = tmp_path_factory.mktemp("pack_split") / "out"
    curate("split", videos, "--out", out, "--workers", "2")
    return out


@pytest.fixture(scope="module")
def packed(tmp_path_factory, split_out) -> Path:
    out = tmp_path_factory.mktemp("packed") / "out"
    shutil.copytree(split_out, out)
    curate("pack", "--out", out, *PACK)
    return out


def copy_out(source: Path, tmp_path: Path) -> Path:
    out = tmp_path / "out"
    shutil.copytree(source, out)
    return out


def shard_bytes(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted((out / "shards").glob("*.tar"))}


def read_samples(out: Path) -> list[dict]:
    """Every sample, through plain webdataset and the wids index's shard list only."""
    index = json.loads((out / "shards" / "index.json").read_text())
    urls = [str(out / "shards" / shard["url"]) for shard in index["shardlist"]]
    return list(wds.WebDataset(urls, shardshuffle=False)) if urls else []


def test_shards_hold_exactly_the_kept_clips(packed):
    clips = read_manifests(packed)[1]
    samples = read_samples(packed)
    kept = clips[clips.drop_reason.isna()]
    assert len(samples) == len(kept) > 3
    assert sorted(s["__key__"] for s in samples) == sorted(kept.key)  # every kept clip once, no other
    assert (kept.key == kept.clip_id).all()  # clip_ids are already safe keys
    by_key = kept.set_index("key")
    for sample in samples:
        row = json.loads(sample["json"])
        assert row["clip_id"] == sample["__key__"] and "shard" not in row
        assert sample["txt"] == b""  # no caption stage ran, no source caption
        assert by_key.shard[sample["__key__"]] == Path(sample["__url__"]).name


def test_index_counts_and_sizes_match_the_tars(packed):
    index = json.loads((packed / "shards" / "index.json").read_text())
    assert index["__kind__"] == "wids-shard-index-v1" and index["wids_version"] == 1
    assert [s["url"] for s in index["shardlist"]] == sorted(p.name for p in (packed / "shards").glob("*.tar"))
    for shard in index["shardlist"]:
        path = packed / "shards" / shard["url"]
        with tarfile.open(path) as tar:
            keys = {m.name.split(".")[0] for m in tar.getmembers()}
        assert shard["nsamples"] == len(keys) <= 3 and shard["filesize"] == path.stat().st_size


def test_each_mp4_has_the_clips_frames_at_the_packed_size(packed):
    clips = read_manifests(packed)[1].set_index("key")
    for sample in read_samples(packed):
        clip = clips.loc[sample["__key__"]]
        with av.open(io.BytesIO(sample["mp4"])) as container:
            stream = container.streams.video[0]
            frames = list(container.decode(stream))
            assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
            assert not container.streams.audio
            rate = float(stream.average_rate)  # read while open: PyAV 18.1.1 refuses a closed container's stream
        assert len(frames) == clip.num_frames
        width, height = frames[0].width, frames[0].height
        assert min(width, height) == SHORT_SIDE and width % 2 == height % 2 == 0
        assert abs(width / height - clip.width / clip.height) < 0.05
        assert rate == pytest.approx(clip.fps)


def test_packed_frames_are_exactly_the_clips_frames(packed):
    """The first and last packed frames are the source's start_frame and end_frame - 1, not a
    neighbour: frame-accurate cutting, through re-encoding."""
    clips = read_manifests(packed)[1].set_index("key")
    moving = [s for s in read_samples(packed) if "motion" in clips.loc[s["__key__"]].path][:2]
    assert moving
    for sample in moving:
        clip = clips.loc[sample["__key__"]]
        packed_frames = list(shown_frames(sample["mp4"]).values())
        size = (packed_frames[0].shape[1], packed_frames[0].shape[0])
        first, last = int(clip.start_frame), int(clip.end_frame) - 1
        source = shown_frames(clip.path, size, {first - 1, first, first + 1, last - 1, last, last + 1})
        for got, index in ((packed_frames[0], first), (packed_frames[-1], last)):
            errors = {i: np.abs(got - source[i]).mean() for i in (index - 1, index, index + 1) if i in source}
            assert min(errors, key=errors.get) == index, errors


def test_packing_again_is_a_no_op_and_a_fresh_pack_is_byte_identical(packed, split_out, tmp_path):
    again = copy_out(packed, tmp_path)
    assert "(0 written now)" in curate("pack", "--out", again, *PACK)
    assert shard_bytes(again) == shard_bytes(packed)
    fresh = tmp_path / "fresh"
    shutil.copytree(split_out, fresh)
    curate("pack", "--out", fresh, *PACK, "--workers", "1")
    assert shard_bytes(fresh) == shard_bytes(packed)


def test_shards_follow_caption_and_threshold_changes(packed, tmp_path):
    out = copy_out(packed, tmp_path)
    clips_path = out / "manifests" / "clips.parquet"
    table = pq.read_table(clips_path).to_pandas()
    first_key = table[table.shard.notna()].sort_values(["video_id", "start_frame"]).key.iloc[0]
    table["caption"] = "Someone's caption."  # a new column: every sample's row changes
    table.to_parquet(clips_path)
    shard_count = len(json.loads((out / "shards" / "index.json").read_text())["shardlist"])
    assert f"({shard_count} written now)" in curate("pack", "--out", out, *PACK)
    table.loc[table.key == first_key, "caption"] = "A hand-written caption."
    table.to_parquet(clips_path)
    assert "(1 written now)" in curate("pack", "--out", out, *PACK)  # only the shard holding the edited clip
    texts = {s["__key__"]: s["txt"] for s in read_samples(out)}
    assert texts[first_key] == b"A hand-written caption."
    # Drop the static clips (run motion): the shards are re-planned around the kept clips.
    curate("motion", "--out", out)
    curate("pack", "--out", out, *PACK)
    clips = read_manifests(out)[1]
    kept = clips[clips.drop_reason.isna()]
    assert (clips.drop_reason == "static").any()
    assert sorted(s["__key__"] for s in read_samples(out)) == sorted(kept.key)
    assert clips[clips.drop_reason.notna()].shard.isna().all()
    index = json.loads((out / "shards" / "index.json").read_text())
    assert [s["url"] for s in index["shardlist"]] == sorted(p.name for p in (out / "shards").glob("*.tar"))


def test_fps_and_crop_settings(split_out, tmp_path):
    out = copy_out(split_out, tmp_path)
    curate("pack", "--out", out, "--set", "pack.fps=12", "pack.crop_width=64", "pack.crop_height=48")
    clips = read_manifests(out)[1].set_index("key")
    for sample in read_samples(out)[:3]:
        clip = clips.loc[sample["__key__"]]
        with av.open(io.BytesIO(sample["mp4"])) as container:
            frames = list(container.decode(video=0))
            assert float(container.streams.video[0].average_rate) == 12
        assert len(frames) == clip.num_frames // 2  # 24 fps sources
        assert (frames[0].width, frames[0].height) == (64, 48)


def test_pack_resumes_after_sigkill_to_the_same_shards(packed, split_out, tmp_path):
    out = copy_out(split_out, tmp_path)
    args = ["pack", "--out", out, *PACK, "--workers", "1", "--quiet"]
    work = out / "manifests" / ".work"
    # Killed after the first encoded video, then while writing shards (after the first one).
    assert kill_when(args, tmp_path / "logs", lambda: bool(list(work.glob("pack-*/*.done"))))
    kill_when(args, tmp_path / "logs", lambda: bool(list((out / "shards").glob("*.tar"))))
    curate("pack", "--out", out, *PACK)
    assert shard_bytes(out) == shard_bytes(packed)
    assert not [p for p in (out / "shards").iterdir() if p.name.startswith(".")]
    keys = [s["__key__"] for s in read_samples(out)]
    assert len(keys) == len(set(keys))
    pd.testing.assert_frame_equal(read_manifests(out)[1], read_manifests(packed)[1])


def test_pack_removes_what_a_killed_run_was_writing(packed, tmp_path):
    """A SIGKILL while a shard or index.json is being written leaves its temporary file beside
    it; the next run removes every one (the shards folder is pack's alone)."""
    out = copy_out(packed, tmp_path)
    for name in (".clips-000000.tar.k3j2.tmp", ".index.json.x81q.tmp"):
        (out / "shards" / name).write_bytes(b"half written")
    curate("pack", "--out", out, *PACK)
    assert not [p.name for p in (out / "shards").iterdir() if p.name.startswith(".")]
    assert shard_bytes(out) == shard_bytes(packed)
