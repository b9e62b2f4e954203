"""Shared fixtures: synthetic videos with known ground truth, bad inputs, and CLI helpers.

Every video is rendered once per session with `curate.synthetic` (small frames, 24 fps, a few
seconds each), so the whole suite decodes real H.264 through the same path users do.
"""

from __future__ import annotations

import dataclasses
import io
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest

from curate.config import SplitConfig
from curate.inputs import collect_inputs
from curate.manifest import ClipRef
from curate.picture import Upright
from curate.stages.base import Unit
from curate.stages.split.stage import SplitStage
from curate.synthetic import Join, Shot, Truth, edited_video, make_video

FPS = 24
W, H = 320, 180
REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable

# Tolerances of the detection contract (frames).
HARD_TOL = 2
GRADUAL_TOL = 8

# Random edits used for the recall/precision test: the first four seeds, four shots each.
ACCURACY_SEEDS = (0, 1, 2, 3)
ACCURACY_SHOTS = 4


# -- scheduling across test processes ------------------------------------------------------------

# `make test` runs the suite in pytest-xdist processes with `--dist loadgroup`: each group's tests
# run in one process. A group is its module, except for modules that share a costly session
# fixture: in one process, the fixture is built once, not once per process that needs it.
SHARED_FIXTURE_GROUPS = {
    "end_to_end": ("test_object_store", "test_ray", "test_run"),  # finished_run: a whole `curate run`
    "training": ("test_train", "test_train_ddp", "test_train_lora", "test_train_precompute"),  # train_shards
}
_GROUP_OF = {module: group for group, modules in SHARED_FIXTURE_GROUPS.items() for module in modules}


def _group(item: pytest.Item) -> str:
    module = item.path.stem
    return _GROUP_OF.get(module, module)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with its group (a group is handed out where its first module comes)."""
    for item in items:
        item.add_marker(pytest.mark.xdist_group(_group(item)))


@dataclass(frozen=True)
class Sample:
    """A rendered video and its ground truth."""

    path: Path
    truth: Truth
    events: tuple[int, ...] = ()  # frames of things that must not be boundaries (flash, occlusion)


# -- videos --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def media(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def edited(media) -> Sample:
    """Four shots of 3-4 s: a hard cut, a 16-frame dissolve, and a 24-frame fade through black.
    Every shot is long enough to give a clip, so clips sit on both sides of every transition."""
    shots = [Shot(72, 1), Shot(72, 2, pan=(1.5, 0.5)), Shot(96, 3), Shot(72, 4, pan=(-1.0, 0.0))]
    joins = [Join("cut"), Join("dissolve", 16), Join("fade", 24)]
    path = media / "edited.mp4"
    return Sample(path, make_video(path, shots, joins, W, H, FPS))


@pytest.fixture(scope="session")
def motion(media) -> Sample:
    """Hard negatives, each in its own shot, joined by real hard cuts: a fast pan (14 px per
    frame), a 2-frame flash, and a dark object sweeping past the lens."""
    shots = [
        Shot(60, 8, pan=(14.0, 0.0)),
        Shot(72, 12, flash_at=30),
        Shot(72, 9, occlusion_at=30),
    ]
    path = media / "motion.mp4"
    truth = make_video(path, shots, [Join("cut"), Join("cut")], W, H, FPS)
    return Sample(path, truth, events=(60 + 30, 60 + 31, *range(132 + 30, 132 + 40)))


@pytest.fixture(scope="session")
def pan_flash(media) -> Sample:
    """One fast-panning shot (14 px per frame) with a 2-frame flash in it, as in the demo."""
    path = media / "pan_flash.mp4"
    truth = make_video(path, [Shot(48, 8, pan=(14.0, 0.0), flash_at=24)], [], W, H, FPS)
    return Sample(path, truth, events=(24, 25))


@pytest.fixture(scope="session")
def low_res_pan(media) -> Sample:
    """A 5 s single take panning slowly (0.5 px per frame), at 160x90."""
    path = media / "low_res_pan.mp4"
    return Sample(path, make_video(path, [Shot(120, 13, pan=(0.5, 0.2))], [], 160, 90, FPS))


@pytest.fixture(scope="session")
def static(media) -> Sample:
    """A single frozen picture with sensor noise."""
    path = media / "static.mp4"
    return Sample(path, make_video(path, [Shot(72, 5, static=True, moving_object=False)], [], W, H, FPS))


@pytest.fixture(scope="session")
def long_take(media) -> Sample:
    """One slowly panning take longer than twice the default split.max_clip_s (10 s)."""
    num_frames = round(2.2 * SplitConfig().max_clip_s * FPS)
    path = media / "long_take.mp4"
    return Sample(path, make_video(path, [Shot(num_frames, 11, pan=(0.5, 0.2))], [], 256, 144, FPS))


@pytest.fixture(scope="session")
def good_videos(edited, motion, static, long_take) -> list[Sample]:
    return [edited, motion, static, long_take]


@pytest.fixture(scope="session")
def accuracy_videos(media) -> list[Sample]:
    """Random edits from `curate.synthetic.edited_video` (cuts, dissolves, fades, motion, events)."""
    samples = []
    for seed in ACCURACY_SEEDS:
        shots, joins = edited_video(seed, num_shots=ACCURACY_SHOTS, fps=FPS)
        path = media / f"random_edit_{seed}.mp4"
        samples.append(Sample(path, make_video(path, shots, joins, W, H, FPS)))
    return samples


# -- bad inputs ----------------------------------------------------------------------------

# The faststart source of the truncated and damaged files: a 4 s shot, a hard cut, a 2 s shot.
BROKEN_SOURCE_FRAMES = 96 + 48


@pytest.fixture(scope="session")
def broken_source(media) -> Sample:
    path = media / "faststart_source.mp4"
    truth = make_video(path, [Shot(96, 21), Shot(48, 22)], [Join("cut")], 160, 90, FPS, faststart=True)
    assert truth.num_frames == BROKEN_SOURCE_FRAMES
    return Sample(path, truth)


def _write_sine(path: Path, codec: str, seconds: float = 2.0, rate: int = 44100) -> None:
    """An audio-only file: a 440 Hz sine wave, no video stream at all."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.layout = "mono"
        fmt = stream.codec_context.format.name
        t = np.arange(int(seconds * rate)) / rate
        wave = 0.3 * np.sin(2 * np.pi * 440 * t)
        for start in range(0, len(wave), 1024):
            chunk = wave[start : start + 1024]
            data = (chunk * 32767).astype(np.int16) if fmt.startswith("s16") else chunk.astype(np.float32)
            frame = av.AudioFrame.from_ndarray(data[None, :], format=fmt, layout="mono")
            frame.sample_rate, frame.pts = rate, start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture(scope="session")
def bad_inputs(media, broken_source) -> dict[str, Path]:
    """Inputs that are not (entirely) videos, by kind."""
    folder = media / "bad"
    folder.mkdir()
    rng = random.Random(1234)
    paths = {
        "empty": folder / "empty.mp4",
        "random": folder / "random_bytes.mp4",
        "text": folder / "notes.mp4",
        "audio": folder / "sine.m4a",
        "audio_flac": folder / "sine.mka",
        "truncated": folder / "truncated.mp4",
        "damaged": folder / "damaged.mp4",
    }
    paths["empty"].write_bytes(b"")
    paths["random"].write_bytes(bytes(rng.randrange(256) for _ in range(64 * 1024)))
    paths["text"].write_text("this is a text file, not a video\n" * 200)
    _write_sine(paths["audio"], "aac")
    _write_sine(paths["audio_flac"], "flac")
    data = broken_source.path.read_bytes()
    paths["truncated"].write_bytes(data[: len(data) * 6 // 10])  # a download cut short
    damaged = bytearray(data)
    start, stop = len(data) * 45 // 100, len(data) * 55 // 100  # garbage over 10% of the file
    damaged[start:stop] = bytes(rng.randrange(256) for _ in range(stop - start))
    paths["damaged"].write_bytes(bytes(damaged))
    return paths


# Inputs that can never give a frame, and the words their error message must contain.
UNREADABLE = {
    "empty": "empty",
    "random": "not a readable video",
    "text": "not a readable video",
    "audio": "no video stream",
    "audio_flac": "no video stream",
}


# -- helpers -------------------------------------------------------------------------------


def read_manifests(out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    manifests = Path(out) / "manifests"
    return pd.read_parquet(manifests / "videos.parquet"), pd.read_parquet(manifests / "clips.parquet")


def shown_frames(source, size: tuple[int, int] | None = None, indices: set[int] | None = None) -> dict[int, np.ndarray]:
    """Frames of a video file or mp4 bytes as a player shows them (upright, their colour tags read),
    as float RGB at `size` (default: as shown), by decode-order index."""
    with av.open(io.BytesIO(source) if isinstance(source, bytes) else source) as container:
        upright = Upright(container.streams.video[0])
        return {
            i: upright.rgb(f, *(size or upright.display_size(f))).astype(float)
            for i, f in enumerate(container.decode(video=0))
            if indices is None or i in indices
        }


def run_module(*args: str, cwd: Path | None = None, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m curate ARGS` in a real process (`env` adds to the environment)."""
    return subprocess.run(
        [PYTHON, "-m", "curate", *map(str, args)],
        cwd=cwd or REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )


def curate(*args) -> str:
    """Run `python -m curate ARGS` (quietly, for commands with a progress bar), require success,
    and return its stdout."""
    quiet = ["--quiet"] if args[0] in ("split", "motion", "text", "aesthetic", "caption", "pack") and "--quiet" not in args else []
    result = run_module(*args, *quiet)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def split_and_pack(folder: Path, samples: list[Sample], *pack_settings: str) -> Path:
    """Copy the samples' videos into `folder`/videos, split them and pack every clip (with
    `--set` `pack_settings`); return the output folder `folder`/out."""
    videos = folder / "videos"
    videos.mkdir(parents=True)
    for sample in samples:
        shutil.copy(sample.path, videos / sample.path.name)
    out = folder / "out"
    curate("split", videos, "--out", out)
    curate("pack", "--out", out, "--set", *pack_settings)
    return out


@pytest.fixture(scope="session")
def train_shards(tmp_path_factory, edited, motion, long_take) -> Path:
    """Shards of three test videos for the trainer's tests: split, every clip packed, three a shard."""
    out = split_and_pack(
        tmp_path_factory.mktemp("train_data"), [edited, motion, long_take], "pack.short_side=48", "pack.max_shard_samples=3"
    )
    return out / "shards"


# `python -m curate run` settings of the end-to-end tests: tiny models, every clip kept by aesthetics.
RUN_SETTINGS = ("--models", "tiny", "--set", "aesthetic.min=0", "pack.short_side=64", "pack.max_shard_samples=4")


@pytest.fixture(scope="session")
def run_videos(tmp_path_factory, edited, motion, static) -> Path:
    """The inputs of the end-to-end `curate run` tests: three test videos in one folder."""
    folder = tmp_path_factory.mktemp("run_videos")
    for sample in (edited, motion, static):
        shutil.copy(sample.path, folder / sample.path.name)
    return folder


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory, run_videos) -> tuple[Path, str]:
    """One uninterrupted `curate run` of run_videos with RUN_SETTINGS on the local executor (the
    reference of the resume and Ray tests): (output folder, stdout)."""
    out = tmp_path_factory.mktemp("run") / "out"
    return out, curate("run", run_videos, "--out", out, *RUN_SETTINGS, "--quiet")


@pytest.fixture(scope="module")
def offline():
    """The hub marked offline and every socket connect refused: models built from config must not
    need the network."""

    def refuse(*args, **kwargs):
        raise OSError("network access attempted while offline")

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        mp.setattr(socket.socket, "connect", refuse)
        mp.setattr(socket.socket, "connect_ex", refuse)
        yield


def clip_refs(path: Path, config: SplitConfig | None = None) -> list[ClipRef]:
    """The clips the split stage cuts from `path`, as clip stages receive them."""
    video = collect_inputs([str(path)])[0]
    outputs, _ = SplitStage(config or SplitConfig()).process(Unit(video.video_id, video))
    names = [f.name for f in dataclasses.fields(ClipRef)]
    return [ClipRef(**{n: row[n] for n in names}) for row in outputs["clips"].to_pylist()]


def kill_when(args, logs: Path, when, timeout: float = 120) -> bool:
    """Start `python -m curate ARGS` in its own session, SIGKILL its whole process group (the CLI
    and its pool workers) as soon as `when()` is true, or let it finish; return whether the kill
    happened before it exited. Output is appended to `logs/stdout` and `logs/stderr`."""
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / "stdout", "ab") as stdout, open(logs / "stderr", "ab") as stderr:
        proc = subprocess.Popen([PYTHON, "-m", "curate", *map(str, args)], cwd=REPO, stdout=stdout, stderr=stderr, start_new_session=True)
        deadline = time.monotonic() + timeout
        try:
            while proc.poll() is None and not when() and time.monotonic() < deadline:
                time.sleep(0.01)
            killed = proc.poll() is None
            if killed:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return killed


def match_boundaries(truth: Truth, detected, hard_tol: int = HARD_TOL, gradual_tol: int = GRADUAL_TOL):
    """One-to-one matching of detected cut_frames to the truth.

    Returns (matched, missed, spurious): matched true positions, true positions with no detection
    within their tolerance, and detections that match nothing.
    """
    targets = sorted([(c, hard_tol) for c in truth.hard_cuts] + [((a + b + 1) // 2, gradual_tol) for a, b in truth.gradual])
    free = sorted(int(d) for d in detected)
    matched, missed = [], []
    for position, tol in sorted(targets, key=lambda t: t[1]):  # tight tolerances pick first
        near = [d for d in free if abs(d - position) <= tol]
        if near:
            free.remove(min(near, key=lambda d: abs(d - position)))
            matched.append(position)
        else:
            missed.append(position)
    return sorted(matched), sorted(missed), free


def split_video(path: Path, config: SplitConfig | None = None) -> tuple[dict, list[dict]]:
    """Run the split stage in this process on one file: (videos row, clip rows)."""
    video = collect_inputs([str(path)])[0]
    outputs, _ = SplitStage(config or SplitConfig()).process(Unit(video.video_id, video))
    return outputs["videos"].to_pylist()[0], outputs["clips"].to_pylist()


_split_cache: dict[tuple[str, str], tuple[dict, list[dict]]] = {}


@pytest.fixture(scope="session")
def split():
    """`split(sample_or_path, config=None)`: the split stage's (videos row, clip rows) for one
    file, memoised for the session (the fixture videos are never rewritten)."""

    def run(sample, config: SplitConfig | None = None):
        path = sample.path if isinstance(sample, Sample) else Path(sample)
        key = (str(path), repr(config or SplitConfig()))
        if key not in _split_cache:
            _split_cache[key] = split_video(path, config)
        return _split_cache[key]

    return run
