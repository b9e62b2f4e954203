"""Packed clips, model inputs and the trainer's frames look as a player shows the source: turned
upright, square pixels, the colours its tags say, deinterlaced, never scaled up; and pack is
byte-identical run to run, with memory that does not grow with the clips of a video."""

from __future__ import annotations

import io
import shutil
import subprocess
import textwrap
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import webdataset as wds
from conftest import PYTHON, REPO, curate, read_manifests, shown_frames

from curate.picture import picture_of
from train.config import DataConfig
from train.data import decode_clip

FPS = 25
# Colour patches a wrong matrix or range shows at once: saturated primaries, near black, near white.
PATCHES = np.array([[220, 30, 30], [30, 200, 40], [40, 40, 220], [230, 220, 40], [24, 24, 24], [236, 236, 236]], np.uint8)


def scene(width: int, height: int, num_frames: int) -> list[np.ndarray]:
    """Six colour patches across the picture (each a sixth of the width), a white square marking
    the top-left corner, and a grey bar crossing the bottom third (motion, so clips are kept)."""
    base = np.zeros((height, width, 3), np.uint8)
    for i, colour in enumerate(PATCHES):
        base[:, i * width // 6 : (i + 1) * width // 6] = colour
    side = max(2, min(width, height) // 6)
    base[:side, :side] = 255
    frames = []
    for n in range(num_frames):
        frame = base.copy()
        x = (n * 3) % max(1, width - 8)
        frame[2 * height // 3 :, x : x + 8] = 128
        frames.append(frame)
    return frames


def encode(path: Path, frames: list[np.ndarray], matrix: str = "bt601", full_range: bool = False, rotation: int = 0,
           pixel_aspect: Fraction | None = None, interlaced: bool = False, fps: int = FPS) -> Path:  # fmt: skip
    """An H.264 mp4 of RGB `frames`, converted with `matrix` and range and tagged with them (601
    untagged, as most files are), with a display rotation and a sample aspect ratio."""
    colorspace = {"bt601": "ITU601", "bt709": "ITU709"}[matrix]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"preset": "veryfast", "crf": "12"})
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        context = stream.codec_context
        if matrix == "bt709":
            context.colorspace, context.color_primaries, context.color_trc = 1, 1, 1
        if full_range:
            context.color_range = 2
        if pixel_aspect:
            context.sample_aspect_ratio = pixel_aspect
        if interlaced:
            context.flags |= av.codec.context.Flags.interlaced_dct | av.codec.context.Flags.interlaced_me
            context.options = {**context.options, "tff": "1"}
        if rotation:
            stream.set_display_rotation(rotation)
        for number, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
                format="yuv420p", dst_colorspace=colorspace, dst_color_range="JPEG" if full_range else "MPEG"
            )
            frame.pts = number
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def pack(out: Path, *videos: Path, settings: tuple[str, ...] = ("pack.short_side=0",)) -> dict[str, bytes]:
    """Split and pack `videos` into `out`; the packed mp4 of each clip, by source file name and start frame."""
    curate("split", *map(str, videos), "--out", out)
    curate("pack", "--out", out, *(["--set", *settings] if settings else []))
    clips = read_manifests(out)[1].set_index("key")
    samples = wds.WebDataset(sorted(str(p) for p in (out / "shards").glob("*.tar")), shardshuffle=False)
    return {f"{Path(clips.path[s['__key__']]).name}@{clips.start_frame[s['__key__']]}": s["mp4"] for s in samples}


def patch_colours(rgb: np.ndarray) -> np.ndarray:
    """The mean colour of each patch's middle (clear of the marker above and the moving bar below)."""
    height, width = rgb.shape[:2]
    return np.array(
        [rgb[height // 3 : 3 * height // 5, (2 * i + 1) * width // 12 - 2 : (2 * i + 1) * width // 12 + 2].mean((0, 1)) for i in range(6)]
    )


# -- reading what a stream says ----------------------------------------------------------------


def test_picture_reads_rotation_pixel_shape_colours_and_fields(tmp_path):
    path = encode(tmp_path / "tagged.mp4", scene(176, 96, 4), matrix="bt709", full_range=True, rotation=90,
                  pixel_aspect=Fraction(16, 11), interlaced=True)  # fmt: skip
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        picture = picture_of(stream, next(container.decode(stream)))
    assert (picture.rotation, picture.pixel_aspect, picture.matrix, picture.full_range, picture.interlaced) == (
        90,
        Fraction(16, 11),
        "bt709",
        True,
        True,
    )
    assert picture.display_size(176, 96) == (96, 256)  # 176 * 16/11 = 256 wide, then turned
    plain = encode(tmp_path / "plain.mp4", scene(64, 36, 2))
    with av.open(str(plain)) as container:
        stream = container.streams.video[0]
        picture = picture_of(stream, next(container.decode(stream)))
    assert (picture.rotation, picture.pixel_aspect, picture.matrix, picture.full_range, picture.interlaced) == (0, 1, "bt601", False, False)


def test_model_inputs_are_upright_with_true_colours(tmp_path):
    """What aesthetic, caption and the report see (framepool converts through `Upright`)."""
    frames = scene(96, 64, 2)
    path = encode(tmp_path / "rot.mp4", frames, matrix="bt709", rotation=90)
    got = shown_frames(path)[0]
    want = np.rot90(frames[0], 1).astype(float)  # ffmpeg shows rotation=90 turned counter-clockwise
    assert got.shape == want.shape == (96, 64, 3)
    assert np.abs(got - want).mean() < 4
    assert got[:8, :8].mean() > 200  # the white top-left marker is at the top-left as shown


# -- packed clips ------------------------------------------------------------------------------


def test_rotated_video_is_packed_upright(tmp_path):
    frames = scene(160, 96, 60)
    path = encode(tmp_path / "phone.mp4", frames, rotation=90)
    mp4 = next(iter(pack(tmp_path / "out", path).values()))
    packed = shown_frames(mp4)
    assert packed[0].shape == (160, 96, 3)
    assert np.abs(packed[0] - np.rot90(frames[0], 1)).mean() < 5
    with av.open(io.BytesIO(mp4)) as container:  # upright in its pixels: no display matrix needed
        assert next(container.decode(video=0)).rotation == 0
    videos, clips = read_manifests(tmp_path / "out")
    assert videos[["width", "height", "rotation"]].values.tolist() == [[96, 160, 90]]  # as shown
    assert clips[["width", "height"]].values.tolist() == [[96, 160]]


@pytest.mark.parametrize("matrix, full_range", [("bt709", False), ("bt601", True)])
def test_packed_colours_are_the_sources(tmp_path, matrix, full_range):
    """A BT.709 or a full-range source packs to the colours a player shows it in (both came out
    several levels off, and untagged, before)."""
    frames = scene(192, 108, 60)
    path = encode(tmp_path / "src.mp4", frames, matrix=matrix, full_range=full_range)
    mp4 = next(iter(pack(tmp_path / "out", path).values()))
    with av.open(io.BytesIO(mp4)) as container:
        frame = next(container.decode(video=0))
        assert (frame.colorspace, frame.color_range) == (1, 1)  # tagged BT.709, limited range
    want = patch_colours(frames[0].astype(float))
    assert np.abs(patch_colours(shown_frames(path)[0]) - want).max() < 5  # the source as a player shows it
    assert np.abs(patch_colours(shown_frames(mp4)[0]) - want).max() < 5


def test_trainer_reads_the_colours_pack_wrote(tmp_path):
    frames = scene(192, 108, 60)
    mp4 = next(iter(pack(tmp_path / "out", encode(tmp_path / "hd.mp4", frames, matrix="bt709")).values()))
    config = DataConfig(shards="", num_frames=4, height=108, width=192)
    clip = decode_clip(mp4, config, "key").astype(float)
    assert np.abs(patch_colours(clip[0]) - patch_colours(frames[0].astype(float))).max() < 5


def test_non_square_pixels_are_packed_at_their_shown_shape(tmp_path):
    """720x576-style anamorphic video: 176x96 pixels of 16:11 are shown 256x96."""
    frames = scene(176, 96, 60)
    mp4 = next(iter(pack(tmp_path / "out", encode(tmp_path / "ana.mp4", frames, pixel_aspect=Fraction(16, 11))).values()))
    packed = shown_frames(mp4)[0]
    assert packed.shape[:2] == (96, 256)
    videos = read_manifests(tmp_path / "out")[0]
    assert videos[["width", "height", "pixel_aspect"]].values.tolist() == [[256, 96, 16 / 11]]
    marker = packed[:, :, 0] > 200  # the white square (and the red patch's red), top-left
    rows, cols = np.nonzero(marker[:40, :40])
    assert abs((cols.max() - cols.min()) - (rows.max() - rows.min())) <= 2  # square again


def comb(rgb: np.ndarray) -> float:
    """How combed a picture is: rows that disagree with both neighbours (mean |2y - up - down|)."""
    luma = rgb.mean(axis=2)
    return float(np.abs(2 * luma[1:-1] - luma[:-2] - luma[2:]).mean())


def test_interlaced_video_is_deinterlaced(tmp_path):
    """Two fields of different instants woven into each frame: a fast bar is combed until bwdif
    weaves it back."""
    frames = []
    for n in range(60):
        frame = np.full((96, 160, 3), 40, np.uint8)
        for row in range(96):
            x = (n * 16 + (8 if row % 2 else 0)) % 140  # the second field is half a frame later
            frame[row, x : x + 12] = 230
        frames.append(frame)
    path = encode(tmp_path / "interlaced.mp4", frames, interlaced=True)
    source_comb = comb(shown_frames(path)[10])
    packed = shown_frames(next(iter(pack(tmp_path / "out", path).values())))
    assert comb(packed[10]) < source_comb / 3


def test_small_videos_are_not_scaled_up_and_slivers_are_dropped(tmp_path):
    small = encode(tmp_path / "small.mp4", scene(48, 36, 60))
    sliver = encode(tmp_path / "sliver.mp4", scene(320, 2, 60))
    packed = pack(tmp_path / "out", small, sliver, settings=())  # default short side 480
    assert shown_frames(packed["small.mp4@0"])[0].shape[:2] == (36, 48)
    clips = read_manifests(tmp_path / "out")[1]
    assert clips.set_index(clips.path.map(lambda p: Path(p).name)).drop_reason["sliver.mp4"] == "too_small"


# -- byte-identity and memory ------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_split(tmp_path_factory) -> Path:
    """The demo's five videos (edits, a long take, a damaged file), split."""
    from curate.synthetic import demo_set

    folder = tmp_path_factory.mktemp("demo")
    demo_set(folder / "videos")
    curate("split", folder / "videos", "--out", folder / "out")
    return folder / "out"


@pytest.mark.parametrize("short_side", [480, 144])
def test_pack_is_byte_identical_run_to_run(demo_split, tmp_path, short_side):
    """The demo set packed twice, each time by fresh processes: the same bytes (x264's AVX-512
    code made clips differ from run to run, from the second clip a worker encoded on)."""
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        shutil.copytree(demo_split, out)
        curate("pack", "--out", out, "--set", f"pack.short_side={short_side}")
        runs.append({p.name: p.read_bytes() for p in sorted((out / "shards").glob("*.tar"))})
    assert runs[0] and runs[0] == runs[1]


_PEAK_MEMORY = textwrap.dedent("""
    import sys
    import pandas as pd
    from curate.config import PackConfig
    from curate.stages.clipstage import clip_units
    from curate.pipeline import UnitSize
    from curate.stages.pack.stage import PackStage
    clips = pd.read_parquet(sys.argv[1]).head(int(sys.argv[2]))
    stage = PackStage(PackConfig(short_side=0))
    for unit in clip_units(clips, UnitSize(None, one_video=True)):
        rows, samples = stage._encode(unit.payload)
        assert len(samples) == len(unit.payload), rows
    # VmHWM: this process's peak RSS (ru_maxrss would start at the forking parent's, pytest's).
    print(next(int(line.split()[1]) // 1024 for line in open("/proc/self/status") if line.startswith("VmHWM")))
""")


def test_pack_memory_does_not_grow_with_the_clips_of_a_video(tmp_path):
    """One unit of 30 clips of a small video peaks at about the memory of a unit of 3 (each clip's
    encoder stayed open until the whole video was done: tens of MB per clip)."""
    from curate.synthetic import Shot, make_video

    path = tmp_path / "long.mp4"
    make_video(path, [Shot(1800, 4, pan=(0.5, 0.2))], [], 160, 90, 24, options={"preset": "ultrafast"})
    curate("split", path, "--out", tmp_path / "out", "--set", "split.max_clip_s=2.5")
    manifest = str(tmp_path / "out" / "manifests" / "clips.parquet")

    def peak_mb(num_clips: int) -> int:
        result = subprocess.run([PYTHON, "-c", _PEAK_MEMORY, manifest, str(num_clips)], capture_output=True, text=True, cwd=REPO)
        assert result.returncode == 0, result.stderr
        return int(result.stdout.split()[-1])

    assert len(read_manifests(tmp_path / "out")[1]) >= 30
    assert peak_mb(30) - peak_mb(3) < 50  # it grew by 175 MB
