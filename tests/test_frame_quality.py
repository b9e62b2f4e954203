"""Clean frames (issue 18): each clip's crop box inside black borders, its exposure and sharpness,
and every later stage seeing only the picture.

Every video is rendered by `curate.synthetic` (textured worlds through a moving camera, sensor
noise), transformed here (bars, darkness, vignette, blur, over-exposure), encoded with x264 and
split by the real stage, so each case goes through the decode path users have.
"""

from __future__ import annotations

import json
import shutil
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pandas as pd
import pytest
from conftest import FPS, curate, read_manifests, split_video

from curate.config import Config, SplitConfig
from curate.filters import drop_reasons
from curate.framepool import decode_frames
from curate.manifest import ClipRef
from curate.picture import Box, Picture
from curate.synthetic import Shot, in_frame, render, write_video

W, H = 320, 180
LETTERBOX = (0, 22, 320, 136)  # 2.35:1 inside 16:9
PILLARBOX = (40, 0, 240, 180)  # 4:3 inside 16:9
WINDOWBOX = (40, 22, 240, 136)


def _video(path: Path, frames) -> Path:
    write_video(path, frames, fps=FPS)
    return path


def _shot(seed: int, seconds: float = 3.0, size=(W, H), **kwargs):
    return render([Shot(int(seconds * FPS), seed, **{"pan": (1.2, 0.4), **kwargs})], [], *size)


def _boxed(seed: int, box, colour: float = 0.0, seconds: float = 3.0):
    return in_frame(_shot(seed, seconds, size=box[2:]), W, H, box, colour)


def _clips(path: Path, **settings) -> list[dict]:
    _, clips = split_video(path, SplitConfig(**settings))
    assert clips, "the video gave no clip"
    return clips


def _box(clip: dict) -> tuple[int, int, int, int]:
    return (clip["crop_x"], clip["crop_y"], clip["crop_width"], clip["crop_height"])


def _assert_tight(box, picture, margin: int = 8) -> None:
    """`box` lies inside the true `picture` and loses at most `margin` pixels on each side."""
    x, y, w, h = box
    px, py, pw, ph = picture
    assert px <= x <= px + margin and py <= y <= py + margin, (box, picture)
    assert px + pw - margin <= x + w <= px + pw and py + ph - margin <= y + h <= py + ph, (box, picture)
    assert x % 2 == y % 2 == w % 2 == h % 2 == 0


# -- borders ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "picture"), [("letterbox", LETTERBOX), ("pillarbox", PILLARBOX), ("windowbox", WINDOWBOX)])
def test_black_bars_are_cropped_to_the_picture(tmp_path, name, picture):
    for clip in _clips(_video(tmp_path / f"{name}.mp4", _boxed(1, picture))):
        _assert_tight(_box(clip), picture)


def test_a_dark_grey_border_is_a_border(tmp_path):
    for clip in _clips(_video(tmp_path / "grey.mp4", _boxed(2, PILLARBOX, colour=40))):
        _assert_tight(_box(clip), PILLARBOX)


def test_bars_that_change_at_a_cut_are_followed_per_clip(tmp_path):
    frames = [*_boxed(3, LETTERBOX), *_boxed(4, PILLARBOX)]
    clips = _clips(_video(tmp_path / "two_shots.mp4", frames))
    first = [c for c in clips if c["end_frame"] <= 3 * FPS]
    second = [c for c in clips if c["start_frame"] >= 3 * FPS]
    assert first and second
    for clip in first:
        _assert_tight(_box(clip), LETTERBOX)
    for clip in second:
        _assert_tight(_box(clip), PILLARBOX)


def _night(frames):
    """Dark footage: a tenth of the light, a black sky over the top quarter, sensor noise."""
    rng = np.random.default_rng(0)
    for frame in frames:
        dark = frame.astype(np.float32) * 0.12
        dark[: H // 4] = 0
        yield np.clip(dark + rng.normal(0, 1.5, dark.shape), 0, 255).astype(np.uint8)


def _vignette(frames):
    """A heavy vignette: the light falls to nothing in the corners."""
    yy, xx = np.mgrid[0:H, 0:W]
    radius = np.hypot((xx - W / 2) / (W / 2), (yy - H / 2) / (H / 2)) / np.sqrt(2)
    gain = np.clip(1.25 - 1.25 * radius**2, 0, 1)[..., None]
    for frame in frames:
        yield (frame * gain).astype(np.uint8)


def _fade_out(frames, num_frames: int):
    """The last two thirds fade to black."""
    start = num_frames // 3
    for i, frame in enumerate(frames):
        level = min(1.0, max(0.0, 1 - (i - start) / (num_frames - start - 8)))
        yield (frame * level).astype(np.uint8)


def _edge_object(frames):
    """A static black object along the left edge (a door frame), full height, featureless."""
    for frame in frames:
        frame = frame.copy()
        frame[:, :48] = 0
        yield frame


@pytest.mark.parametrize("name", ["night", "vignette", "fade", "edge_object"])
def test_dark_pictures_are_not_borders(tmp_path, name):
    num_frames = 4 * FPS
    frames = _shot(5, seconds=4, pan=(0.0, 0.0))  # a still camera: its dark parts stay put, as bars do
    frames = {"night": _night, "vignette": _vignette, "edge_object": _edge_object}.get(name, lambda f: _fade_out(f, num_frames))(frames)
    for clip in _clips(_video(tmp_path / f"{name}.mp4", frames), min_clip_s=1.0):
        assert _box(clip) == (0, 0, W, H), name


def test_no_measures_without_samples(tmp_path):
    clips = _clips(_video(tmp_path / "off.mp4", _boxed(6, LETTERBOX)), quality_samples_per_s=0)
    assert all(clip.get("crop_width") is None and clip.get("sharpness") is None for clip in clips)


def test_a_clip_shorter_than_the_sampling_interval_still_gets_values(tmp_path):
    clips = _clips(_video(tmp_path / "short.mp4", _boxed(7, LETTERBOX, seconds=2)), quality_samples_per_s=0.1, min_clip_s=0.5)
    for clip in clips:
        _assert_tight(_box(clip), LETTERBOX)
        assert clip["sharpness"] > 0


# -- boxes between coded and shown pixels ----------------------------------------------------------


@pytest.mark.parametrize("rotation", [0, 90, 180, 270])
@pytest.mark.parametrize("pixel_aspect", [Fraction(1), Fraction(16, 11)])
def test_boxes_map_between_coded_and_shown_pixels(rotation, pixel_aspect):
    picture = Picture(rotation, pixel_aspect, "bt601", False, False)
    coded = Box(20, 10, 120, 60)  # of a 176 x 96 coded frame
    shown = picture.display_box(coded, 176, 96)
    shown_w, shown_h = picture.display_size(176, 96)
    assert 0 <= shown.x and shown.x + shown.width <= shown_w and shown.y + shown.height <= shown_h
    assert all(v % 2 == 0 for v in shown)
    back = picture.coded_box(shown, 176, 96)
    assert coded.x <= back.x <= coded.x + 3 and coded.y <= back.y <= coded.y + 3  # inside, rounded inwards
    assert coded.x + coded.width - 3 <= back.x + back.width <= coded.x + coded.width
    assert coded.y + coded.height - 3 <= back.y + back.height <= coded.y + coded.height
    assert picture.display_box(Box(0, 0, 176, 96), 176, 96) == Box(0, 0, shown_w, shown_h)


def test_a_sideways_phone_video_gets_its_box_upright(tmp_path):
    """Stored landscape with a pillarbox in coded pixels, shown portrait: the bars are top and bottom."""
    path = tmp_path / "sideways.mp4"
    write_video(path, _boxed(8, PILLARBOX), fps=FPS, rotation=90)
    for clip in _clips(path):
        assert (clip["width"], clip["height"]) == (H, W)
        _assert_tight(_box(clip), (0, 40, 180, 240))


# -- exposure and sharpness ------------------------------------------------------------------------


def _blur(frames, sigma: float):
    for frame in frames:
        yield cv2.GaussianBlur(frame, (0, 0), sigma)


def _pan_blur(frames, length: int):
    """The smear of a fast pan: each frame averaged along the motion over `length` pixels."""
    for frame in frames:
        yield cv2.blur(frame, (length, 1))


def _overexposed(frames):
    for frame in frames:
        yield np.clip(frame.astype(np.float32) * 1.6 + 90, 0, 255).astype(np.uint8)


def _measured(tmp_path: Path, name: str, frames) -> pd.DataFrame:
    clips = pd.DataFrame(_clips(_video(tmp_path / f"{name}.mp4", frames)))
    clips["reason"] = drop_reasons(clips, Config())
    return clips


def test_sharp_soft_and_blurred_clips(tmp_path):
    sharp = _measured(tmp_path, "sharp", _shot(9))
    soft = _measured(tmp_path, "soft", _blur(_shot(9), 1.0))  # a soft lens, still in focus
    pan = _measured(tmp_path, "pan", _pan_blur(_shot(9, pan=(6.0, 0)), 6))
    blurred = _measured(tmp_path, "blurred", _blur(_shot(9), 4.0))
    assert (sharp.sharpness > soft.sharpness.max()).all() and (soft.sharpness > blurred.sharpness.max()).all()
    for kept in (sharp, soft, pan):
        assert kept.reason.isna().all(), kept[["sharpness", "reason"]]
    assert (blurred.reason == "blurry").all(), blurred.sharpness


def test_exposure_measures_and_drops(tmp_path):
    normal = _measured(tmp_path, "normal", _shot(10))
    bright = _measured(tmp_path, "bright", _overexposed(_shot(10)))
    night = _measured(tmp_path, "night", _night(_shot(10)))
    assert normal.reason.isna().all()
    assert (bright.bright_frac > 0.5).all() and (bright.reason == "bad_exposure").all()
    assert (night.brightness < normal.brightness.min()).all() and (night.dark_frac > normal.dark_frac.max()).all()
    # Exposure is measured inside the box: bars do not make a letterboxed clip darker.
    boxed = _measured(tmp_path, "boxed", _boxed(10, PILLARBOX))
    assert boxed.dark_frac.max() < 0.05 and boxed.reason.isna().all()


# -- the command: filter, pack, motion and the model stages see only the picture ------------------


@pytest.fixture(scope="module")
def bordered_out(tmp_path_factory) -> Path:
    """split + motion + pack of a windowboxed video, a heavily blurred one and a plain one."""
    videos = tmp_path_factory.mktemp("bordered_videos")
    _video(videos / "windowbox.mp4", _boxed(11, WINDOWBOX, seconds=4))
    _video(videos / "blurred.mp4", _blur(_shot(12, seconds=4), 4.0))
    _video(videos / "plain.mp4", _shot(11, seconds=4, size=WINDOWBOX[2:]))  # the windowbox's picture alone
    out = tmp_path_factory.mktemp("bordered") / "out"
    curate("split", videos, "--out", out, "--workers", "1")
    curate("motion", "--out", out, "--workers", "1")
    curate("pack", "--out", out, "--workers", "1", "--set", "pack.short_side=0")
    return out


def _by_file(clips: pd.DataFrame) -> dict[str, pd.DataFrame]:
    return {name: group for name, group in clips.groupby(clips.path.map(lambda p: Path(p).name))}


def test_filter_retunes_the_new_thresholds(bordered_out, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(bordered_out, out)
    clips = _by_file(read_manifests(out)[1])
    assert (clips["blurred.mp4"].drop_reason == "blurry").all()
    curate("filter", "--out", out, "--set", "split.min_sharpness=0", "split.min_picture_side=200")
    clips = _by_file(read_manifests(out)[1])
    assert clips["blurred.mp4"].drop_reason.isna().all()
    assert (clips["windowbox.mp4"].drop_reason == "small_picture").all()  # its picture is 136 high
    assert clips["plain.mp4"].drop_reason.isna().all()  # not cropped: too_small's business, not this rule's
    curate("filter", "--out", out, "--set", "split.min_picture_side=64", "split.min_brightness=0.9")
    assert (read_manifests(out)[1].drop_reason == "bad_exposure").all()
    assert "dropped (bad_exposure): 3" in curate("status", "--out", out)


def test_motion_measures_the_picture_not_the_bars(bordered_out):
    clips = _by_file(read_manifests(bordered_out)[1])
    boxed, plain = clips["windowbox.mp4"], clips["plain.mp4"]
    # The same picture moving the same way: speeds in widths of the box agree with the bare picture's.
    assert np.allclose(boxed.motion_score.to_numpy(), plain.motion_score.to_numpy(), rtol=0.15)


def _edges(frame: np.ndarray) -> list[float]:
    """Mean luma of the outermost row and column on each side."""
    luma = frame.mean(axis=2)
    return [luma[0].mean(), luma[-1].mean(), luma[:, 0].mean(), luma[:, -1].mean()]


def test_packed_clips_hold_the_picture_without_its_bars(bordered_out):
    clips = _by_file(read_manifests(bordered_out)[1])
    boxed = clips["windowbox.mp4"]
    assert boxed.key.notna().all()
    tars = sorted((bordered_out / "shards").glob("*.tar"))
    import webdataset as wds

    samples = {s["__key__"]: s for s in wds.WebDataset([str(t) for t in tars], shardshuffle=False)}
    for row in boxed.itertuples():
        sample = samples[row.key]
        meta = json.loads(sample["json"])
        assert (meta["crop_width"], meta["crop_height"]) == (row.crop_width, row.crop_height)
        with av.open(__import__("io").BytesIO(sample["mp4"])) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        height, width = frames[0].shape[:2]
        assert (width, height) == (row.crop_width, row.crop_height)
        assert abs(width / height - WINDOWBOX[2] / WINDOWBOX[3]) < 0.05  # the picture's aspect
        for frame in frames[:: max(1, len(frames) // 6)]:
            assert min(_edges(frame)) > 20, _edges(frame)  # no black edge row or column


def test_model_stages_decode_only_the_crop_box(bordered_out):
    row = _by_file(read_manifests(bordered_out)[1])["windowbox.mp4"].iloc[0]
    fields = ["clip_id", "video_id", "path", "start_frame", "end_frame", "start_s", "end_s", "num_frames", "fps", "width", "height"]
    ref = ClipRef(**{f: row[f] for f in fields}, crop_x=int(row.crop_x), crop_y=int(row.crop_y),
                  crop_width=int(row.crop_width), crop_height=int(row.crop_height))  # fmt: skip
    assert ref.box is not None

    def convert(frame, view):
        width, height = view.display_size(frame)
        return view.rgb(frame, width // 2, height // 2)

    events = list(decode_frames([ref], [[ref.start_frame + 5]], convert, 1, 4))
    assert events[0][0] == "frame"
    pixels = events[0][3]
    assert pixels.shape[:2] == (row.crop_height // 2, row.crop_width // 2)
    assert min(_edges(pixels)) > 20
    whole = ClipRef(**{f: row[f] for f in fields})  # a manifest without crop columns: the whole frame
    assert whole.box is None


def test_a_clip_whose_box_changes_is_measured_again(tmp_path):
    """A folder split without the measures (or before crop boxes existed) saw whole frames. Split
    again with them, the clips keep their ids but get a crop box: motion and pack measure and encode
    them again (a new sample key), and a third run of either is a no-op."""
    videos = tmp_path / "videos"
    _video(videos / "letterbox.mp4", _boxed(21, LETTERBOX))
    out = tmp_path / "out"

    def run(command: str, *settings: str) -> str:
        return curate(command, *([videos] if command == "split" else []), "--out", out, "--workers", "1", *settings)

    def scored_and_packed() -> tuple[bool, bool]:
        return "motion: 1 clips scored in" in run("motion"), "pack: 1 clips encoded in" in run("pack", "--set", "pack.short_side=0")

    run("split", "--set", "split.quality_samples_per_s=0")
    assert scored_and_packed() == (True, True)
    whole = read_manifests(out)[1].iloc[0]
    run("split")
    assert scored_and_packed() == (True, True)
    cropped = read_manifests(out)[1].iloc[0]
    assert cropped.clip_id == whole.clip_id and _box(cropped) != (0, 0, W, H)
    assert cropped.key != whole.key and (cropped.pack_width, cropped.pack_height) == _box(cropped)[2:]
    assert scored_and_packed() == (False, False)
    assert "motion: 0 clips scored in 0 units" in run("motion")
