"""Reading awkward but valid files: every later stage must read back exactly the frames the split
stage numbered, whatever the container does. MPEG-TS (seeks land late), variable frame rate,
several video tracks, leading frames without timestamps, edit lists, still images.

Every file is made here with PyAV (no ffmpeg CLI), small (160x90) and a few seconds long.
"""

from __future__ import annotations

import dataclasses
import io
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import split_video
from PIL import Image

from curate.config import MotionConfig, SplitConfig
from curate.framepool import decode_frames, frame_indices, uniform_positions
from curate.manifest import ClipRef
from curate.stages.motion.stage import MotionStage
from curate.stages.split.shots import Transition
from curate.stages.split.video import clip_spans
from curate.synthetic import Join, Shot, make_video, render
from curate.videoio import DecodeLog, LumaGrid, dominant_fps, iter_frames, iter_spans, luma, open_video

W, H = 160, 90


def full_decode(path: Path) -> tuple[list[float], list[float]]:
    """Every frame's mean luma and time, from one plain pass over the file."""
    container, stream, _ = open_video(str(path))
    log = DecodeLog()
    means = [float(luma(frame).mean()) for frame in iter_frames(container, stream, log)]
    container.close()
    return means, list(log.frame_times_s)


def read_spans(path: Path, spans: list[tuple[float, float, int]], fps: float, seek_gap_s: float = 2.0):
    """Mean luma and time (`log.frame_times_s[-1]` as each is yielded) of the frames `iter_spans`
    yields for each span, from a freshly opened file."""
    container, stream, _ = open_video(str(path))
    log = DecodeLog()
    means: dict[int, list[float]] = {i: [] for i in range(len(spans))}
    times: dict[int, list[float]] = {i: [] for i in range(len(spans))}
    for index, frame in iter_spans(container, stream, spans, fps, log, seek_gap_s=seek_gap_s):
        means[index].append(float(luma(frame).mean()))
        times[index].append(log.frame_times_s[-1])
    container.close()
    return means, times


def refs(rows: list[dict]) -> list[ClipRef]:
    names = [f.name for f in dataclasses.fields(ClipRef)]
    return [ClipRef(**{n: row[n] for n in names}) for row in rows]


def assert_clips_read_back(path: Path, min_clips: int, unreachable_s: tuple[float, float] = (0.0, 0.0)) -> tuple[dict, list[dict]]:
    """Split `path`; every clip read back by `iter_spans` (as motion, pack and the frame pool read
    it) is exactly frames start_frame..end_frame-1 of a full decode, with the same times. Also
    read spans starting at every fourth frame, each after a seek from wherever the reader stood
    (but spans starting inside `unreachable_s`, which only a read from the start can reach)."""
    video, clips = split_video(path)
    assert video["status"] == "ok" and video["error"] is None, video
    assert len(clips) >= min_clips, clips
    means, times = full_decode(path)
    assert len(means) == video["num_frames"]
    got, got_times = read_spans(path, [(c["start_s"], c["end_s"], c["num_frames"]) for c in clips], video["fps"])
    for index, clip in enumerate(clips):
        assert got[index] == means[clip["start_frame"] : clip["end_frame"]], (clip["start_frame"], clip["end_frame"])
        assert got_times[index] == times[clip["start_frame"] : clip["end_frame"]]
    end = lambda b: times[b] if b < len(times) else times[-1] + 1 / video["fps"]  # noqa: E731
    starts = [a for a in range(0, len(means) - 3, 4) if not unreachable_s[0] < times[a] < unreachable_s[1]]
    got, _ = read_spans(path, [(times[a], end(a + 3), 3) for a in starts], video["fps"], seek_gap_s=0.0)
    for index, a in enumerate(starts):
        assert got[index] == means[a : a + 3], a
    return video, clips


# -- MPEG-TS: a seek to the start lands on the next keyframe ------------------------------------


@pytest.fixture(scope="module")
def ts_videos(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("ts")
    paths = {name: folder / f"{name}.ts" for name in ("one_shot", "two_shots", "two_shots_short_gops")}
    make_video(paths["one_shot"], [Shot(72, 3, pan=(1.0, 0.0))], [], W, H, 24)
    make_video(paths["two_shots"], [Shot(72, 1), Shot(72, 2, pan=(1.5, 0.5))], [Join("cut")], W, H, 24)
    gops = {"x264-params": "keyint=24:min-keyint=24:bframes=3:scenecut=0"}
    make_video(paths["two_shots_short_gops"], [Shot(72, 1), Shot(72, 2, pan=(1.5, 0.5))], [Join("cut")], W, H, 24, options=gops)
    for path in paths.values():
        with av.open(str(path)) as container:
            assert container.format.name == "mpegts"
    return paths


@pytest.mark.parametrize("name", ["one_shot", "two_shots", "two_shots_short_gops"])
def test_mpegts_clips_read_back_their_own_frames(ts_videos, name):
    assert_clips_read_back(ts_videos[name], min_clips=1 if name == "one_shot" else 2)


def test_mpegts_single_shot_gets_a_motion_score(ts_videos):
    _, clips = split_video(ts_videos["one_shot"])
    (row,) = MotionStage(MotionConfig()).score(refs(clips))
    assert "motion_error" not in row and row["motion_score"] > 0, row


# -- variable frame rate ------------------------------------------------------------------------

# 4 s at 30 fps, 4 s at 10 fps, 3 s at 30 fps, joined by hard cuts.
VFR_PARTS = [(Shot(120, 1, pan=(1.0, 0.0)), 30), (Shot(40, 2, pan=(3.0, 0.0)), 10), (Shot(90, 3, pan=(-1.0, 0.5)), 30)]


@pytest.fixture(scope="module")
def vfr_video(tmp_path_factory) -> Path:
    """Frames encoded with explicit timestamps in a 1/90000 time base, as phones record."""
    path = tmp_path_factory.mktemp("vfr") / "vfr.mp4"
    time_base = Fraction(1, 90000)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30, options={"preset": "veryfast", "crf": "20"})
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.codec_context.time_base = time_base
        t = Fraction(0)
        for shot, fps in VFR_PARTS:
            for rgb in render([shot], [], W, H):
                frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                frame.pts, frame.time_base = int(t / time_base), time_base
                container.mux(stream.encode(frame))
                t += Fraction(1, fps)
        container.mux(stream.encode())
    return path


def test_variable_frame_rate_clips_are_timed_in_real_time(vfr_video):
    video, clips = split_video(vfr_video)
    _, times = full_decode(vfr_video)
    assert video["num_frames"] == 250 and video["cut_frames"] == [120, 160]
    slow = [c for c in clips if 120 <= c["start_frame"] and c["end_frame"] <= 160]
    assert slow, "the 4 s shot at 10 fps gives a clip"
    assert video["fps"] == 30.0  # the dominant rate, not the average (250 frames in 11 s)
    assert video["duration_s"] == pytest.approx(11.0, abs=1e-3)
    config = SplitConfig()
    for clip in clips:
        assert clip["fps"] == 30.0
        assert clip["start_s"] == times[clip["start_frame"]]
        end = times[clip["end_frame"]] if clip["end_frame"] < len(times) else times[-1] + 1 / 30
        assert clip["end_s"] == pytest.approx(end)
        duration = clip["end_s"] - clip["start_s"]
        assert config.min_clip_s - 1e-6 <= duration <= config.max_clip_s + 1e-6, clip
    # Margins are kept in time: 0.1 s on each side of the cuts at 4 s and 8 s.
    (clip,) = slow
    assert (clip["start_s"], clip["end_s"]) == (pytest.approx(4.1), pytest.approx(7.9))
    assert clip["num_frames"] == 38


def test_variable_frame_rate_frames_are_picked_right(vfr_video):
    """The frame pool picks frames by index; a clip whose frames are not evenly spaced at its fps is
    read whole, counting frames, instead of timing each frame from the rate."""
    _, clips = split_video(vfr_video)
    means, _ = full_decode(vfr_video)
    clips = refs(clips)
    wanted = [frame_indices(clip, uniform_positions(5)) for clip in clips]
    events = list(decode_frames(clips, wanted, lambda frame, _: float(luma(frame).mean()), 1, 8))
    assert [e for e in events if e[0] == "error"] == []
    got = {(clip_no, index): value for _, clip_no, index, value in events}
    assert got == {(n, i): means[i] for n, indices in enumerate(wanted) for i in indices}
    assert any(120 <= c.start_frame < 160 for c in clips)


def test_variable_frame_rate_is_packed_in_real_time(vfr_video):
    """The 10-fps shot (4.1-7.9 s after margins) packs at the dominant 30 fps for 3.8 s: each of
    its frames shown three times, not played three times too fast."""
    from curate.config import PackConfig
    from curate.stages.pack.stage import PackStage

    _, clips = split_video(vfr_video)
    means, times = full_decode(vfr_video)
    slow = next(c for c in refs(clips) if 120 <= c.start_frame and c.end_frame <= 160)
    rows, samples = PackStage(PackConfig(short_side=0))._encode([slow])
    assert rows[0]["pack_fps"] == 30.0 and rows[0]["pack_num_frames"] == 114  # 3.8 s at 30 fps
    with av.open(io.BytesIO(samples[0]["mp4"])) as container:
        stream = container.streams.video[0]
        packed = [float(luma(f).mean()) for f in container.decode(stream)]
        assert float(stream.duration * stream.time_base) == pytest.approx(3.8, abs=0.04)
    shown = [max(i for i in range(slow.start_frame, slow.end_frame) if times[i] <= slow.start_s + j / 30 + 1e-3) for j in range(114)]
    assert np.abs(np.array(packed) - np.array([means[i] for i in shown])).max() < 3


def test_dominant_fps():
    cfr = [i / 24 for i in range(100)]
    assert dominant_fps(cfr, [24.0]) == 24.0
    assert dominant_fps(cfr, []) == 24.0
    ntsc = [round(i * 1001 / 30000, 3) for i in range(300)]  # milliseconds, as in Matroska
    assert dominant_fps(ntsc, []) == pytest.approx(30000 / 1001)
    assert dominant_fps(ntsc, [30000 / 1001 * 1.004]) == pytest.approx(30000 / 1001 * 1.004)  # nominal, within 1%
    mixed = [i / 30 for i in range(120)] + [4 + i / 10 for i in range(40)]
    assert dominant_fps(mixed, [160 / 8.0]) == 30.0  # the average rate (20) is not the dominant one
    assert dominant_fps([0.0], [25.0]) == 25.0


def test_clip_spans_in_time_keep_constant_rate_results():
    config = SplitConfig(min_clip_s=2.0, max_clip_s=10.0, margin_s=0.1)
    cuts = [Transition(100, 100, 100, "cut"), Transition(300, 316, 308, "dissolve")]
    for fps, start_s in ((24, 0.0), (30000 / 1001, 1.48), (25, -0.04)):
        jittery = [round(start_s + i / fps, 3) for i in range(700)]  # millisecond timestamps
        assert clip_spans(700, cuts, fps, config, jittery) == clip_spans(700, cuts, fps, config)
    # 4 s at 30 fps, then 4 s at 10 fps: the slow shot is long enough in time.
    times = [i / 30 for i in range(120)] + [4 + i / 10 for i in range(40)]
    spans = clip_spans(160, [Transition(120, 120, 120, "cut")], 30.0, config, times)
    assert spans == [(0, 117), (121, 160)]


@pytest.mark.parametrize("seed", range(4))
def test_clip_spans_at_variable_frame_rates_hold_the_rules_in_time(seed):
    """Random stretches at 10-60 fps joined by cuts: clips stay inside shots, keep the margin and
    the length limits in seconds, give or take the grid's half frame and one source frame."""
    rng = np.random.default_rng(seed)
    config = SplitConfig(min_clip_s=2.0, max_clip_s=5.0, margin_s=0.2)
    for _ in range(20):
        times, cuts, t = [], [], 0.0
        for shot in range(int(rng.integers(1, 5))):
            if shot:
                cuts.append(len(times))
            for _ in range(int(rng.integers(1, 4))):  # a shot can change rate midway (phones do)
                rate = float(rng.choice([10, 15, 24, 30, 60]))
                count = int(rng.integers(5, 8 * rate))
                times.extend(t + i / rate for i in range(count))
                t += count / rate
        n, fps = len(times), 30.0
        spans = clip_spans(n, [Transition(c, c, c, "cut") for c in cuts], fps, config, times)
        end = lambda b, times=times, n=n, fps=fps: times[b] if b < n else times[-1] + 1 / fps  # noqa: E731
        slack = 1 / 10 + 1 / fps  # the sparsest frames, and the grid
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False)) and all(a < b for a, b in spans)
        for a, b in spans:
            assert not any(a < c < b for c in cuts), "a clip holds a cut"
            assert config.min_clip_s - slack <= end(b) - times[a] <= config.max_clip_s + slack
            shot_start = max([0] + [c for c in cuts if c <= a])
            shot_end = min([n] + [c for c in cuts if c >= b])
            if shot_start > 0:
                assert times[a] - times[shot_start] >= config.margin_s - slack
            if shot_end < n:
                assert times[shot_end] - end(b) >= config.margin_s - slack
        for first, stop in zip([0, *cuts], [*cuts, n], strict=True):
            margins = config.margin_s * ((first > 0) + (stop < n))
            if end(stop) - times[first] - margins >= config.min_clip_s + slack:
                assert any(first <= a and b <= stop for a, b in spans), "a long enough shot gives no clip"


# -- several video tracks -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cover_first(tmp_path_factory) -> Path:
    """A Matroska file whose first video track is one larger JPEG picture (a cover) and whose second
    is the real video: two 3 s shots."""
    path = tmp_path_factory.mktemp("tracks") / "cover_first.mkv"
    with av.open(str(path), "w") as container:
        cover = container.add_stream("mjpeg", rate=1)
        cover.width, cover.height, cover.pix_fmt = 2 * W, 2 * H, "yuvj420p"
        video = container.add_stream("libx264", rate=24)
        video.width, video.height, video.pix_fmt = W, H, "yuv420p"
        picture = av.VideoFrame.from_ndarray(np.full((2 * H, 2 * W, 3), 200, np.uint8), format="rgb24")
        container.mux(cover.encode(picture.reformat(format="yuvj420p")))
        container.mux(cover.encode())
        for rgb in render([Shot(72, 1), Shot(72, 2, pan=(1.5, 0.0))], [Join("cut")], W, H):
            container.mux(video.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(video.encode())
    with av.open(str(path)) as container:
        assert [s.codec_context.name for s in container.streams.video] == ["mjpeg", "h264"]
    return path


def test_the_real_video_track_is_read_not_a_cover_picture(cover_first):
    video, clips = assert_clips_read_back(cover_first, min_clips=2)
    assert (video["codec"], video["width"], video["height"], video["num_frames"]) == ("h264", W, H, 144)
    assert video["cut_frames"] == [72]
    _, stream, _ = open_video(str(cover_first))
    assert stream.index == 1


def test_audio_with_cover_art_is_no_video(tmp_path):
    path = tmp_path / "song.m4a"
    with av.open(str(path), "w", format="mp4") as container:
        audio = container.add_stream("aac", rate=44100)
        audio.layout = "mono"
        cover = container.add_stream("png", rate=1)
        cover.width, cover.height, cover.pix_fmt = 64, 64, "rgb24"
        cover.disposition = av.stream.Disposition.attached_pic
        container.mux(cover.encode(av.VideoFrame.from_ndarray(np.full((64, 64, 3), 200, np.uint8), format="rgb24")))
        container.mux(cover.encode())
        for start in range(0, 44100, 1024):
            samples = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            samples.sample_rate, samples.pts = 44100, start
            container.mux(audio.encode(samples))
        container.mux(audio.encode())
    with av.open(str(path)) as container:
        (picture,) = container.streams.video
        assert picture.disposition & av.stream.Disposition.attached_pic
    video, _ = split_video(path)
    assert video["status"] == "error" and video["error"] == "no video stream (audio streams and a cover picture only)", video


# -- leading frames without timestamps --------------------------------------------------------


@pytest.fixture(scope="module")
def gop_source(tmp_path_factory) -> Path:
    """Two 3 s shots, 2 s GOPs with B-frames."""
    path = tmp_path_factory.mktemp("cut") / "source.mp4"
    gops = {"x264-params": "keyint=48:min-keyint=48:bframes=3:scenecut=0"}
    make_video(path, [Shot(72, 1), Shot(72, 2, pan=(1.5, 0.5))], [Join("cut")], W, H, 24, options=gops)
    return path


def _cut_copy(source: Path, target: Path, start_s: float, options: dict | None = None) -> None:
    """What `ffmpeg -ss START -i SOURCE -c copy` writes: every packet, timestamps moved back by
    START, so the frames before it (the rest of its GOP) get negative timestamps."""
    with av.open(str(source)) as src, av.open(str(target), "w", options=options or {}) as dst:
        stream = src.streams.video[0]
        out = dst.add_stream_from_template(stream)
        shift = round(start_s / stream.time_base)
        for packet in src.demux(stream):
            if packet.dts is None:
                continue
            packet.pts, packet.dts, packet.stream = packet.pts - shift, packet.dts - shift, out
            dst.mux(packet)


@pytest.fixture(scope="module")
def untimed_head(gop_source, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("untimed") / "cut.mkv"
    _cut_copy(gop_source, path, 0.7, {"avoid_negative_ts": "disabled"})
    with av.open(str(path)) as container:
        first = next(container.decode(video=0))
        assert first.pts is None, "the demuxer drops the negative timestamps"
    return path


def test_leading_frames_without_timestamps_are_read_back_exactly(untimed_head):
    with av.open(str(untimed_head)) as container:
        frames = [(f.pts, f.key_frame) for f in container.decode(video=0)]
    untimed = next(i for i, (pts, _) in enumerate(frames) if pts is not None)
    assert untimed > 10 and all(pts is not None for pts, _ in frames[untimed:])
    _, times = full_decode(untimed_head)
    # Matroska indexes no keyframe without a timestamp: a seek before the first timed keyframe
    # lands on it, so only a read from the start (the reader's first) reaches the frames before.
    first_indexed = next(i for i, (pts, key) in enumerate(frames) if key and pts is not None)
    video, _ = assert_clips_read_back(untimed_head, min_clips=2, unreachable_s=(0.0, times[first_indexed]))
    assert video["num_frames"] == 144 and video["cut_frames"] == [72]
    assert all(b > a for a, b in zip(times, times[1:], strict=False)), "the leading frames come before the timed ones"
    assert times[untimed - 1] == pytest.approx(times[untimed] - 1 / 24)


# -- edit lists and still images ------------------------------------------------------------------


def test_edit_listed_mp4_is_complete(gop_source, tmp_path):
    path = tmp_path / "edited.mp4"
    _cut_copy(gop_source, path, 0.7)  # the mov muxer hides the frames before 0 with an edit list
    means, _ = full_decode(path)
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == 144 > len(means)
    video, clips = split_video(path)
    assert video["status"] == "ok" and video["error"] is None, video["error"]
    assert video["num_frames"] == len(means) and clips


@pytest.mark.parametrize("kind", ["png", "jpeg", "gif"])
def test_still_image_named_mp4_is_an_error(tmp_path, kind):
    path = tmp_path / "picture.mp4"
    pixels = np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format=kind)
    video, clips = split_video(path)
    codec = {"png": "png", "jpeg": "mjpeg", "gif": "gif"}[kind]
    assert video["status"] == "error" and video["error"] == f"a still image ({codec}), not a video", video
    assert clips == []


def test_one_frame_video_is_still_a_video(tmp_path):
    path = tmp_path / "one_frame.mp4"
    make_video(path, [Shot(1, 1)], [], W, H, 24)
    video, _ = split_video(path)
    assert video["status"] == "ok" and video["num_frames"] == 1


@pytest.mark.parametrize("width, height", [(640, 360), (1280, 720), (721, 577), (33, 17), (3, 2)])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])  # 8-bit planes, and 10-bit ones brought to 0-255
def test_luma_grid_cells_average_a_quarter_pattern_of_pixels(width, height, dtype):
    plane = np.random.default_rng(width).integers(0, 256, (height, width)).astype(dtype)
    grid = LumaGrid(width, height, 64, 36)
    step_x, step_y = grid.step_x, grid.step_y
    ys, xs = {step_y // 4, 3 * (step_y // 4)}, {step_x // 4, 3 * (step_x // 4)}
    expected = np.array(
        [[np.mean([float(plane[i * step_y + y, j * step_x + x]) for y in ys for x in xs]) for j in range(grid.grid_width)]
         for i in range(grid.grid_height)]
    )  # fmt: skip
    cells = grid(plane)
    assert cells.dtype == np.float32 and cells.shape == (min(36, height), min(64, width))
    assert np.array_equal(cells, expected.astype(np.float32))
