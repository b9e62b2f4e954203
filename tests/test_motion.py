"""The motion stage: static clips fall under the thresholds and moving ones stay, scores do not
depend on resolution or frame rate, intra-only streams fall back to optical flow, the span reader
returns exactly the frames a full decode numbers, and bad files give error rows, never exceptions.

Videos are small synthetic ones (320x180 unless a test needs another size) with fresh sensor
noise in every frame, as a real camera gives, so a frozen picture is not trivially still.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest
from conftest import split_video

import curate.videoio as videoio
from curate.config import Config, MotionConfig
from curate.filters import drop_reasons
from curate.manifest import ClipRef
from curate.stages.base import Unit
from curate.stages.motion.stage import MotionStage
from curate.synthetic import Join, Shot, make_video, slideshow
from curate.videoio import DecodeLog, iter_frames, iter_spans, luma, open_video

FPS = 24
MOTION_COLUMNS = ["motion_score", "motion_min_region", "motion_static_frac", "motion_max_jump", "motion_method"]


def noisy(num_frames: int, seed: int, **kwargs) -> Shot:
    return Shot(num_frames, seed, fresh_noise=True, **kwargs)


def frozen(num_frames: int, seed: int) -> Shot:
    return noisy(num_frames, seed, static=True, moving_object=False)


def walker(num_frames: int, seed: int, **kwargs) -> Shot:
    """A small textured object (a tenth of the width) crossing a still scene: a person walking."""
    return noisy(num_frames, seed, object_scale=0.5, object_texture=True, **kwargs)


def hand(num_frames: int, seed: int, speed: float = 0.4, **kwargs) -> Shot:
    """A large textured object moving slowly in a still scene: a hand moving something."""
    return noisy(num_frames, seed, object_scale=1.5, object_speed=speed, object_texture=True, **kwargs)


def pan(num_frames: int, seed: int, dx: float, dy: float = 0.0) -> Shot:
    return noisy(num_frames, seed, pan=(dx, dy), moving_object=False)


def cut_together(path: Path, shots: list[Shot], width: int = 320, height: int = 180, fps: int = FPS, **kwargs) -> Path:
    make_video(path, shots, [Join("cut")] * (len(shots) - 1), width, height, fps, **kwargs)
    return path


def split_clips(path: Path) -> list[ClipRef]:
    """The clips the split stage makes of `path`, as the motion stage receives them."""
    _, rows = split_video(path)
    return [ClipRef(**{name: row[name] for name in ClipRef.__dataclass_fields__}) for row in rows]


def clips_at(path: Path, spans: list[tuple[int, int]]) -> list[ClipRef]:
    """Clips over chosen [start, end) frame spans, with times as the split stage records them."""
    container, stream, info = open_video(str(path))
    log = DecodeLog()
    count = sum(1 for _ in iter_frames(container, stream, log))
    container.close()
    times = list(log.frame_times_s) + [log.frame_times_s[-1] + 1 / info.fps]
    return [
        ClipRef(f"clip-{a}-{b}", "video", str(path), a, b, times[a], times[min(b, count)], b - a, info.fps, info.width, info.height)
        for a, b in spans
    ]


def score(clips: list[ClipRef], **settings) -> list[dict]:
    return MotionStage(MotionConfig(**settings)).score(clips)


def verdicts(rows: list[dict], config: MotionConfig | None = None) -> list[str]:
    """What the pipeline's drop rules make of the rows: "kept" or the drop reason."""
    table = pd.DataFrame([{"clip_id": str(i), **row} for i, row in enumerate(rows)])
    reasons = drop_reasons(table, Config(motion=config or MotionConfig()))
    return [reason or "kept" for reason in reasons]


# -- videos --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> Path:
    """Six 2.5 s shots joined by hard cuts: a frozen picture, a walker, a hand, a gentle pan, a
    shot with a 2-frame flash, and one with 2 frames of decoder garbage."""
    shots = [
        frozen(60, 5),
        walker(60, 1),
        hand(60, 2),
        pan(60, 13, 0.5, 0.2),
        noisy(60, 12, flash_at=30),
        noisy(60, 14, glitch_at=30),
    ]
    return cut_together(tmp_path_factory.mktemp("motion") / "cases.mp4", shots)


@pytest.fixture(scope="module")
def case_clips(cases) -> list[ClipRef]:
    """One clip per shot, over the frames the split keeps of it. The split itself leaves the
    glitched shot out: its two garbage frames are uncertain changes that no clip may hold, and
    the rest of the shot is too short for a clip. The motion stage must still judge a clip that
    holds a glitch (from looser split settings, or spans made elsewhere), so that one is made here."""
    spans = [(0, 58), (62, 118), (122, 178), (182, 238), (242, 298), (302, 360)]
    assert [(c.start_frame, c.end_frame) for c in split_clips(cases)] == spans[:5]
    return clips_at(cases, spans)


@pytest.fixture(scope="module")
def case_rows(case_clips) -> list[dict]:
    return score(case_clips)


# -- static and moving ---------------------------------------------------------------------


def test_static_moving_and_broken_clips_under_default_thresholds(case_clips, case_rows):
    assert verdicts(case_rows) == ["static", "kept", "kept", "kept", "extreme_motion", "extreme_motion"]
    assert all(row["motion_method"] == "mvs" for row in case_rows)
    frozen_row, walker_row, hand_row, pan_row, flash_row, glitch_row = case_rows
    assert frozen_row["motion_static_frac"] > 0.75  # nothing moves in (nearly) any half second
    assert walker_row["motion_static_frac"] == 0.0 and hand_row["motion_static_frac"] == 0.0
    assert walker_row["motion_score"] > 3 * frozen_row["motion_score"]
    # A pan moves the whole frame: every region moves nearly as fast as the mean (0.5 px/frame
    # at 320 px and 24 fps is 0.0375 widths/s, plus the 0.2 px/frame vertical part).
    assert 0.03 < pan_row["motion_score"] < 0.05
    assert pan_row["motion_min_region"] > 0.8 * pan_row["motion_score"]
    assert hand_row["motion_min_region"] < 0.2 * hand_row["motion_score"]  # most of the scene is still
    # Flashes and garbage are single frames: the luma jump catches them, not the motion score.
    for row in (flash_row, glitch_row):
        assert row["motion_max_jump"] > MotionConfig().max_jump and row["motion_score"] < MotionConfig().max
    assert max(row["motion_max_jump"] for row in case_rows[:4]) < 0.02


def test_slideshow_and_screen_recording_are_static(tmp_path):
    """Stills held for 1.25 s each (one clip over several of them), and a screen
    recording where a line of text is typed and a caret blinks."""
    stills, joins = slideshow(3, 30, seed=40)
    make_video(tmp_path / "slides.mp4", stills, joins, 320, 180, FPS)
    screen = make_video(tmp_path / "screen.mp4", [noisy(72, 6, typing=True, moving_object=False)], [], 640, 360, FPS)
    rows = score(clips_at(tmp_path / "slides.mp4", [(0, 90)]) + clips_at(tmp_path / "screen.mp4", [(0, screen.num_frames)]))
    assert verdicts(rows) == ["static", "static"]


def test_scores_do_not_depend_on_resolution_or_frame_rate(tmp_path):
    """The same motion in frame widths per second at 320x180/24 fps, 640x360/24 fps and
    320x180/48 fps (pixels per frame scaled to match) scores within 30%."""
    versions = {
        "small": ([pan(60, 7, 1.0), hand(60, 8)], 320, 180, 24),
        "large": ([pan(60, 7, 2.0), hand(60, 8)], 640, 360, 24),
        "fast": ([pan(120, 7, 0.5), hand(120, 8, speed=0.2)], 320, 180, 48),
    }
    scores = {}
    for name, (shots, width, height, fps) in versions.items():
        path = cut_together(tmp_path / f"{name}.mp4", shots, width, height, fps)
        scores[name] = [row["motion_score"] for row in score(split_clips(path))]
    assert all(len(s) == 2 for s in scores.values())
    for clip in range(2):
        values = [s[clip] for s in scores.values()]
        assert max(values) < 1.3 * min(values), scores
    assert 0.065 < scores["small"][0] < 0.085  # 1 px/frame at 320 px and 24 fps = 0.075 widths/s


# -- optical-flow fallback -----------------------------------------------------------------


@pytest.mark.parametrize(
    "name, codec, options",
    [("mjpeg.avi", "mjpeg", {"color_range": "pc"}), ("all_intra.mp4", "libx264", {"x264-params": "keyint=1", "crf": "20"})],
)
def test_intra_only_streams_fall_back_to_flow(tmp_path, name, codec, options):
    path = cut_together(tmp_path / name, [frozen(60, 5), walker(60, 1), pan(60, 13, 0.5, 0.2)], codec=codec, options=options)
    rows = score(split_clips(path))
    assert [row["motion_method"] for row in rows] == ["flow"] * 3
    assert verdicts(rows) == ["static", "kept", "kept"]
    assert 0.025 < rows[2]["motion_score"] < 0.05  # the pan, measured by flow instead of vectors
    # Forcing motion vectors on a stream that has none is a per-clip error, not a crash.
    forced = score(split_clips(path)[:1], method="mvs")
    assert "no motion vectors" in forced[0]["motion_error"] and verdicts(forced) == ["motion_failed"]


def test_flow_can_be_chosen_for_any_stream(case_clips, case_rows):
    rows = score(case_clips[:4], method="flow")
    assert [row["motion_method"] for row in rows] == ["flow"] * 4
    assert verdicts(rows) == ["static", "kept", "kept", "kept"]
    assert rows[3]["motion_score"] == pytest.approx(case_rows[3]["motion_score"], rel=0.3)


# -- reading the right frames ----------------------------------------------------------------


def _remux_with_decode_order_timestamps(source: Path, target: Path) -> None:
    """Copy the packets with pts = dts, as some broken muxers write them: the decoder still
    outputs pictures in display order, but their timestamps are no longer monotonic."""
    with av.open(str(source)) as src, av.open(str(target), "w") as dst:
        out = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is None:
                continue
            packet.pts, packet.stream = packet.dts, out
            dst.mux(packet)


@pytest.fixture(scope="module")
def reordered_videos(tmp_path_factory) -> dict[str, Path]:
    """Streams with B-frames and 12-frame GOPs, closed and open (an open GOP's leading frames lie
    before its keyframe, so a seek to them lands too late), and one with pts in decode order."""
    folder = tmp_path_factory.mktemp("spans")
    gop = "keyint=12:min-keyint=12:bframes=3:scenecut=0"
    paths = {"closed_gop": folder / "closed.mp4", "open_gop": folder / "open.mp4", "decode_order_pts": folder / "decode_order.mkv"}
    for name, extra in (("closed_gop", ""), ("open_gop", ":open-gop=1")):
        make_video(paths[name], [pan(96, 3, 1.0)], [], 160, 90, FPS, options={"x264-params": gop + extra})
    _remux_with_decode_order_timestamps(paths["closed_gop"], paths["decode_order_pts"])
    return paths


def _full_decode(path: Path) -> tuple[list[np.ndarray], list[float], float]:
    container, stream, info = open_video(str(path))
    log = DecodeLog()
    planes = [luma(frame).copy() for frame in iter_frames(container, stream, log)]
    container.close()
    return planes, list(log.frame_times_s), info.fps


def _read_spans(path: Path, spans: list[tuple[int, int]], times: list[float], fps: float, seek_gap_s: float) -> dict[int, list[np.ndarray]]:
    container, stream, _ = open_video(str(path))
    end = lambda b: times[b] if b < len(times) else times[-1] + 1 / fps  # noqa: E731
    got: dict[int, list[np.ndarray]] = {i: [] for i in range(len(spans))}
    for index, frame in iter_spans(container, stream, [(times[a], end(b), b - a) for a, b in spans], fps, seek_gap_s=seek_gap_s):
        got[index].append(luma(frame).copy())
    container.close()
    return got


@pytest.mark.parametrize("name", ["closed_gop", "open_gop", "decode_order_pts"])
def test_iter_spans_yields_exactly_the_spans_frames(reordered_videos, name, monkeypatch):
    path = reordered_videos[name]
    planes, times, fps = _full_decode(path)
    assert len(planes) == 96
    if name == "decode_order_pts":
        assert any(b < a for a, b in zip(times, times[1:], strict=False)), "timestamps should go backwards"
    seeks = []
    real_seek = videoio._seek
    monkeypatch.setattr(videoio, "_seek", lambda *args: seeks.append(args[2]) or real_seek(*args))
    # Adjacent spans read in one pass, then spans far apart (a seek each), given out of order.
    adjacent = [(0, 10), (10, 30), (30, 31), (31, 50)]
    distant = [(85, 96), (55, 61), (67, 79)]
    got = _read_spans(path, adjacent + distant, times, fps, seek_gap_s=0.1)
    for index, (a, b) in enumerate(adjacent + distant):
        assert len(got[index]) == b - a, (a, b)
        assert all(np.array_equal(x, y) for x, y in zip(got[index], planes[a:b], strict=True)), (a, b)
    # One seek per distant span (plus retries); the first span, at the start of a fresh file, needs none.
    assert len(seeks) >= len(distant) and 0.0 not in seeks[:1]
    # A span starting at every frame, each read after a seek from wherever the reader stood.
    starts = _read_spans(path, [(a, a + 3) for a in range(0, 93, 4)], times, fps, seek_gap_s=0.0)
    for index, a in enumerate(range(0, 93, 4)):
        assert len(starts[index]) == 3 and all(np.array_equal(x, y) for x, y in zip(starts[index], planes[a : a + 3], strict=True)), a


# -- bad data ------------------------------------------------------------------------------


def test_unreadable_files_give_error_rows(bad_inputs, case_clips):
    for kind in ("empty", "random", "text", "audio"):
        clips = [replace(clip, path=str(bad_inputs[kind])) for clip in case_clips[:2]]
        rows = score(clips)
        assert all(set(row) == {"motion_error"} and row["motion_error"] for row in rows), kind


def test_damaged_and_truncated_files_give_scores_or_error_rows(bad_inputs, broken_source):
    clips = split_clips(broken_source.path)  # the intact file's clips, read from broken copies
    for kind in ("damaged", "truncated"):
        moved = [replace(clip, path=str(bad_inputs[kind])) for clip in clips]
        rows = score(moved)
        assert len(rows) == len(clips)
        for row in rows:
            assert ("motion_error" in row) != ("motion_score" in row)
            assert "motion_error" in row or math.isfinite(row["motion_score"])
    beyond = clips_at(broken_source.path, [(110, 140)])[0]  # lost in the truncated copy
    truncated = score([replace(beyond, path=str(bad_inputs["truncated"]))])
    assert "no decodable frames" in truncated[0]["motion_error"]


def test_scores_are_deterministic_and_match_the_schema(case_clips, case_rows):
    stage = MotionStage(MotionConfig())
    assert stage.score(case_clips) == case_rows
    outputs, stats = stage.process(Unit("unit", case_clips))
    table = outputs["scores"]
    assert table.schema == stage.schema and table.num_rows == len(case_clips)
    assert [str(table.schema.field(c).type) for c in MOTION_COLUMNS] == ["float"] * 4 + ["string"]
    assert stats == {"clips": len(case_clips), "frames": sum(c.num_frames for c in case_clips)}
