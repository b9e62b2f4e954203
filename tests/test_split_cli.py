"""`python -m curate split`: manifests, bad inputs, list inputs, determinism, re-runs, config and
user errors. In-process `curate.cli.main` where the test is about results, a real
`python -m curate` process where it is about the process (exit codes, stderr, --help)."""

from __future__ import annotations

import contextlib
import io
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import BROKEN_SOURCE_FRAMES, FPS, PYTHON, UNREADABLE, read_manifests, run_module

from curate.__main__ import _begins_with_local_split
from curate.cli import main
from curate.manifest import CLIP_SCHEMA, VIDEO_SCHEMA
from curate.stages.split.video import clip_id

# DESIGN.md section 3, in order, then the extra columns documented in curate/manifest.py.
CONTRACT_VIDEO_COLUMNS = [
    "video_id", "path", "status", "error", "duration_s", "fps", "num_frames", "width", "height", "codec", "cut_frames",
]  # fmt: skip
EXTRA_VIDEO_COLUMNS = ["cut_kinds", "source_caption", "rotation", "pixel_aspect", "interlaced", "color_matrix", "full_range"]
CONTRACT_CLIP_COLUMNS = [
    "clip_id", "video_id", "path", "start_frame", "end_frame", "start_s", "end_s", "num_frames", "fps", "width",
    "height", "drop_reason",
]  # fmt: skip
CONTRACT_CROP_COLUMNS = ["crop_x", "crop_y", "crop_width", "crop_height"]  # the picture's box (issue 18)
EXTRA_CLIP_COLUMNS = ["source_caption", *CONTRACT_CROP_COLUMNS, "brightness", "dark_frac", "bright_frac", "sharpness"]


def split_cli(*args) -> tuple[int, str]:
    """`curate.cli.main(["split", ...])` in this process: (exit code, stdout)."""
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["split", *map(str, args), "--quiet"])
    return code, stdout.getvalue()


def spans_of(clips: pd.DataFrame, video_id: str) -> list[tuple[int, int]]:
    rows = clips[clips.video_id == video_id]
    return list(zip(rows.start_frame.tolist(), rows.end_frame.tolist(), strict=True))


# -- one batch of good and bad inputs ------------------------------------------------------


class Batch:
    def __init__(self, out: Path, inputs: list[Path], code: int, stdout: str):
        self.out, self.inputs, self.code, self.stdout = out, inputs, code, stdout
        self.videos, self.clips = read_manifests(out)

    def row(self, path: Path) -> pd.Series:
        (index,) = self.videos.index[self.videos.path == str(path)]
        return self.videos.loc[index]


@pytest.fixture(scope="module")
def batch_inputs(good_videos, bad_inputs) -> list[Path]:
    return [s.path for s in good_videos] + list(bad_inputs.values())


@pytest.fixture(scope="module")
def batch(tmp_path_factory, batch_inputs) -> Batch:
    out = tmp_path_factory.mktemp("batch")
    code, stdout = split_cli(*batch_inputs, "--out", out, "--workers", 2)
    return Batch(out, batch_inputs, code, stdout)


def test_batch_exit_code_and_summary(batch):
    assert batch.code == 0
    assert f"split: {len(batch.inputs)} videos processed, 0 already done" in batch.stdout
    readable = len(batch.inputs) - len(UNREADABLE)
    assert f"{len(batch.inputs)} inputs, {readable} ok" in batch.stdout
    assert f"{len(UNREADABLE)} errors" in batch.stdout


def test_video_manifest_columns(batch):
    columns = list(batch.videos.columns)
    assert columns == VIDEO_SCHEMA.names
    assert columns == CONTRACT_VIDEO_COLUMNS + EXTRA_VIDEO_COLUMNS
    assert pq.read_schema(batch.out / "manifests" / "videos.parquet").remove_metadata().equals(VIDEO_SCHEMA)


def test_clip_manifest_columns(batch):
    columns = list(batch.clips.columns)
    assert columns == CLIP_SCHEMA.names
    assert columns == CONTRACT_CLIP_COLUMNS + EXTRA_CLIP_COLUMNS
    assert pq.read_schema(batch.out / "manifests" / "clips.parquet").remove_metadata().equals(CLIP_SCHEMA)


def test_one_row_per_input_in_input_order(batch):
    assert batch.videos.path.tolist() == [str(p) for p in batch.inputs]
    assert batch.videos.video_id.is_unique
    assert set(batch.videos.status) <= {"ok", "error"}


@pytest.mark.parametrize("kind", sorted(UNREADABLE))
def test_unreadable_input_is_an_error_row(batch, bad_inputs, kind):
    row = batch.row(bad_inputs[kind])
    assert row.status == "error"
    assert UNREADABLE[kind] in row.error
    assert "\n" not in row.error and len(row.error) < 200, row.error
    assert pd.isna(row.num_frames)
    assert list(row.cut_frames) == []
    assert spans_of(batch.clips, row.video_id) == []


def test_truncated_file_is_partly_decoded(batch, bad_inputs):
    row = batch.row(bad_inputs["truncated"])
    assert row.status == "ok"
    assert isinstance(row.error, str) and "partly decoded" in row.error
    assert 0 < row.num_frames < BROKEN_SOURCE_FRAMES
    spans = spans_of(batch.clips, row.video_id)
    assert spans, "the frames before the cut still give a clip"
    assert all(end <= row.num_frames for _, end in spans)


def test_one_decoder_thread_keeps_every_frame_before_the_truncation(batch, bad_inputs, tmp_path):
    """The default single-threaded decoder keeps the frames that frame threads drop where the file
    is cut (how many depends on the thread count, so on the machine), and its result does not
    depend on the number of workers either (test_fresh_runs_are_identical)."""
    row = batch.row(bad_inputs["truncated"])
    code, _ = split_cli(bad_inputs["truncated"], "--out", tmp_path, "--set", "split.decoder_threads=4")
    assert code == 0
    threaded, _ = read_manifests(tmp_path)
    assert row.num_frames >= threaded.num_frames.iloc[0]
    # The source's packets up to the cut: every whole one decodes on one thread.
    assert row.num_frames == _whole_frames_before_the_cut(bad_inputs["truncated"])


def _whole_frames_before_the_cut(path) -> int:
    """Frames a plain single-threaded PyAV decode gets from `path`, skipping packets it rejects."""
    import av

    frames = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        for packet in container.demux(stream):
            try:
                frames += len(packet.decode())
            except av.FFmpegError:
                continue
    return frames


def test_damaged_file_keeps_its_good_frames(batch, bad_inputs):
    row = batch.row(bad_inputs["damaged"])
    assert row.status == "ok"
    assert row.num_frames >= BROKEN_SOURCE_FRAMES // 2
    spans = spans_of(batch.clips, row.video_id)
    assert spans and all(end <= row.num_frames for _, end in spans)


def test_good_videos_keep_their_clips(batch, good_videos, split):
    """In a batch full of bad inputs, each good video gets exactly the clips the split stage
    gives it on its own."""
    for sample in good_videos:
        row = batch.row(sample.path)
        assert row.status == "ok" and pd.isna(row.error)
        assert row.num_frames == sample.truth.num_frames
        assert row.fps == pytest.approx(FPS)
        assert row.codec == "h264"
        assert row.duration_s == pytest.approx(sample.truth.num_frames / FPS, abs=1e-3)
        alone_video, alone_clips = split(sample)
        assert list(row.cut_frames) == alone_video["cut_frames"]
        assert (row.width, row.height) == (alone_video["width"], alone_video["height"])
        assert spans_of(batch.clips, row.video_id) == [(c["start_frame"], c["end_frame"]) for c in alone_clips]
        assert spans_of(batch.clips, row.video_id), sample.path.name


def test_clip_rows_agree_with_their_video(batch):
    clips, videos = batch.clips, batch.videos.set_index("video_id")
    assert clips.clip_id.is_unique
    assert clips.drop_reason.isna().all()
    for clip in clips.itertuples():
        video = videos.loc[clip.video_id]
        assert video.status == "ok"
        assert clip.clip_id == clip_id(clip.video_id, clip.start_frame, clip.end_frame)
        assert "." not in clip.clip_id  # WebDataset keys end at the first dot
        assert clip.path == video.path
        assert (clip.fps, clip.width, clip.height) == (video.fps, video.width, video.height)
        assert clip.num_frames == clip.end_frame - clip.start_frame
        assert 0 <= clip.start_frame < clip.end_frame <= video.num_frames


def test_resolved_config_is_saved(batch):
    saved = yaml.safe_load((batch.out / "manifests" / "config.yaml").read_text())
    assert saved["split"]["max_clip_s"] == 10.0 and saved["split"]["min_clip_s"] == 2.0


def test_status_command(batch, capsys, tmp_path):
    assert main(["status", "--out", str(batch.out)]) == 0
    assert f"{len(batch.inputs)} inputs" in capsys.readouterr().out
    assert main(["status", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")


# -- determinism and re-runs ---------------------------------------------------------------


def test_fresh_runs_are_identical(batch, batch_inputs, tmp_path):
    """Another fresh run, with another number of workers, gives the same tables and ids."""
    code, _ = split_cli(*batch_inputs, "--out", tmp_path, "--workers", 1)
    assert code == 0
    videos, clips = read_manifests(tmp_path)
    pd.testing.assert_frame_equal(videos, batch.videos)
    pd.testing.assert_frame_equal(clips, batch.clips)
    assert clips.clip_id.tolist() == batch.clips.clip_id.tolist()


def test_rerunning_a_finished_command_is_a_no_op(batch):
    manifests = batch.out / "manifests"
    before = {name: (manifests / name).read_bytes() for name in ["videos.parquet", "clips.parquet"]}
    code, stdout = split_cli(*batch.inputs, "--out", batch.out, "--workers", 2)
    assert code == 0
    assert f"split: 0 videos processed, {len(batch.inputs)} already done" in stdout
    for name, data in before.items():
        assert (manifests / name).read_bytes() == data, name


def test_new_input_added_to_a_finished_run(static, edited, tmp_path):
    out = tmp_path / "out"
    assert split_cli(static.path, "--out", out, "--workers", 1)[0] == 0
    code, stdout = split_cli(static.path, edited.path, "--out", out, "--workers", 1)
    assert code == 0 and "split: 1 videos processed, 1 already done" in stdout
    videos, clips = read_manifests(out)
    assert videos.path.tolist() == [str(static.path), str(edited.path)]
    assert set(clips.path) == {str(static.path), str(edited.path)}
    # An input left out of the command stays: a folder gathers what its runs were given ...
    code, stdout = split_cli(edited.path, "--out", out, "--workers", 1)
    assert code == 0 and "split: 0 videos processed, 2 already done" in stdout
    assert read_manifests(out)[0].path.tolist() == [str(static.path), str(edited.path)]
    # ... unless --replace says the manifests list only this command's inputs.
    assert split_cli(edited.path, "--out", out, "--workers", 1, "--replace")[0] == 0
    videos, clips = read_manifests(out)
    assert videos.path.tolist() == [str(edited.path)] and set(clips.path) == {str(edited.path)}


# -- list, directory and glob inputs -------------------------------------------------------


@pytest.fixture
def library(tmp_path, static) -> Path:
    """A folder of videos as users have them: nested, next to files that are not videos. (Two
    names for the static shot: a different name is a different input.)"""
    root = tmp_path / "library"
    (root / "trip" / "day 1").mkdir(parents=True)
    shutil.copy(static.path, root / "static.mp4")
    shutil.copy(static.path, root / "trip" / "day 1" / "été clip.mp4")
    (root / "trip" / "notes.txt").write_text("not an input\n")
    (root / "trip" / "cover.png").write_bytes(b"\x89PNG not really")
    return root


def test_directory_input(library, tmp_path):
    code, _ = split_cli(library, "--out", tmp_path / "out", "--workers", 1)
    assert code == 0
    videos, clips = read_manifests(tmp_path / "out")
    assert videos.path.tolist() == [str(library / "static.mp4"), str(library / "trip" / "day 1" / "été clip.mp4")]
    assert (videos.status == "ok").all()
    assert set(clips.video_id) == set(videos.video_id)


def test_glob_input(library, tmp_path):
    code, _ = split_cli(str(library / "**" / "*.mp4"), "--out", tmp_path / "out", "--workers", 1)
    assert code == 0
    videos, _ = read_manifests(tmp_path / "out")
    assert sorted(videos.path) == sorted([str(library / "static.mp4"), str(library / "trip" / "day 1" / "été clip.mp4")])


def test_txt_list_relative_to_the_list(library, tmp_path):
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "inputs.txt").write_text("# two videos and one that is gone\n../library/static.mp4\n../library/gone.mp4\n")
    code, _ = split_cli(lists / "inputs.txt", "--out", tmp_path / "out", "--workers", 1)
    assert code == 0  # a missing entry of a list is a row with an error, not a failed run
    videos, clips = read_manifests(tmp_path / "out")
    assert len(videos) == 2
    ok, gone = videos.iloc[0], videos.iloc[1]
    assert Path(ok.path).resolve() == library / "static.mp4" and ok.status == "ok"
    assert gone.status == "error" and "cannot read" in gone.error
    assert set(clips.video_id) == {ok.video_id}


def test_csv_list_captions_become_source_caption(library, tmp_path):
    pd.DataFrame(
        {
            "path": ["library/static.mp4", "library/trip/day 1/été clip.mp4"],
            "caption": ["a still picture, noisy", "the same picture, renamed"],
        }
    ).to_csv(tmp_path / "inputs.csv", index=False)
    code, _ = split_cli(tmp_path / "inputs.csv", "--out", tmp_path / "out", "--workers", 1)
    assert code == 0
    videos, clips = read_manifests(tmp_path / "out")
    assert videos.source_caption.tolist() == ["a still picture, noisy", "the same picture, renamed"]
    captions = dict(zip(videos.video_id, videos.source_caption, strict=True))
    assert len(clips) >= 2
    assert all(clip.source_caption == captions[clip.video_id] for clip in clips.itertuples())


def test_parquet_list(library, tmp_path):
    pd.DataFrame({"path": [str(library / "static.mp4")], "caption": ["still"]}).to_parquet(tmp_path / "inputs.parquet")
    code, _ = split_cli(tmp_path / "inputs.parquet", "--out", tmp_path / "out", "--workers", 1)
    assert code == 0
    videos, clips = read_manifests(tmp_path / "out")
    assert videos.path.tolist() == [str(library / "static.mp4")]
    assert videos.source_caption.tolist() == ["still"] and clips.source_caption.tolist() == ["still"]


def test_same_file_in_two_folders_gives_two_rows(library, tmp_path):
    (library / "backup").mkdir()
    shutil.copy(library / "static.mp4", library / "backup" / "static.mp4")
    code, _ = split_cli(library / "static.mp4", library / "backup" / "static.mp4", "--out", tmp_path / "out", "--workers", 1)
    assert code == 0
    videos, clips = read_manifests(tmp_path / "out")
    assert len(videos) == 2 and videos.video_id.is_unique
    assert videos.status.tolist() == ["ok", "error"]
    assert "same file as" in videos.error.iloc[1]
    assert set(clips.video_id) == {videos.video_id.iloc[0]}


# -- config --------------------------------------------------------------------------------


def test_set_max_clip_s_changes_clips(batch, long_take, tmp_path):
    code, _ = split_cli(long_take.path, "--out", tmp_path, "--workers", 1, "--set", "split.max_clip_s=4")
    assert code == 0
    _, short = read_manifests(tmp_path)
    default = batch.clips[batch.clips.path == str(long_take.path)]
    n = long_take.truth.num_frames
    assert len(default) == math.ceil(n / (10 * FPS))
    assert len(short) == math.ceil(n / (4 * FPS))
    assert (short.num_frames / short.fps <= 4 + 1e-6).all()
    assert yaml.safe_load((tmp_path / "manifests" / "config.yaml").read_text())["split"]["max_clip_s"] == 4.0


def test_config_file_option(static, tmp_path):
    (tmp_path / "cfg.yaml").write_text("split:\n  min_clip_s: 4\n")  # longer than the 3 s shot
    code, _ = split_cli(static.path, "--out", tmp_path / "out", "--workers", 1, "--config", tmp_path / "cfg.yaml")
    assert code == 0
    videos, clips = read_manifests(tmp_path / "out")
    assert videos.status.tolist() == ["ok"] and len(clips) == 0


def test_switching_config_back_rewrites_the_manifests(static, tmp_path):
    out = tmp_path / "out"
    assert split_cli(static.path, "--out", out, "--workers", 1)[0] == 0
    _, first = read_manifests(out)
    assert len(first) == 1
    assert split_cli(static.path, "--out", out, "--workers", 1, "--set", "split.min_clip_s=4")[0] == 0
    _, other = read_manifests(out)
    assert len(other) == 0
    assert split_cli(static.path, "--out", out, "--workers", 1)[0] == 0
    _, again = read_manifests(out)
    pd.testing.assert_frame_equal(again, first)


# -- stale results after an input changes --------------------------------------------------


def test_moved_input_gets_its_new_path(static, tmp_path):
    old = tmp_path / "old" / "take.mp4"
    old.parent.mkdir()
    shutil.copy(static.path, old)
    out = tmp_path / "out"
    assert split_cli(old, "--out", out, "--workers", 1)[0] == 0
    new = tmp_path / "new" / "take.mp4"
    old.parent.rename(new.parent)
    assert split_cli(new, "--out", out, "--workers", 1)[0] == 0
    videos, clips = read_manifests(out)
    assert videos.path.tolist() == [str(new)]
    assert set(clips.path) == {str(new)}


def test_edited_caption_is_not_stale(static, tmp_path):
    listing = tmp_path / "inputs.csv"
    out = tmp_path / "out"
    pd.DataFrame({"path": [str(static.path)], "caption": ["old caption"]}).to_csv(listing, index=False)
    assert split_cli(listing, "--out", out, "--workers", 1)[0] == 0
    pd.DataFrame({"path": [str(static.path)], "caption": ["new caption"]}).to_csv(listing, index=False)
    assert split_cli(listing, "--out", out, "--workers", 1)[0] == 0
    videos, clips = read_manifests(out)
    assert videos.source_caption.tolist() == ["new caption"]
    assert set(clips.source_caption) == {"new caption"}


# -- the process: exit codes, stderr, --help -----------------------------------------------


@pytest.mark.parametrize(
    "args, words",
    [
        (["{video}", "--set", "split.nope=1"], "split.nope"),
        (["{tmp}/missing.mp4"], "missing.mp4"),
        (["{video}", "--config", "{tmp}/missing.yaml"], "missing.yaml"),
    ],
)
def test_user_mistakes_exit_2_with_one_error_line(static, tmp_path, args, words):
    args = [a.replace("{video}", str(static.path)).replace("{tmp}", str(tmp_path)) for a in args]
    result = run_module("split", *args, "--out", tmp_path / "out")
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:") and words in lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "out" / "manifests").exists()


@pytest.mark.parametrize(
    "args, words",
    [
        (["{video}", "--set", "nope.x=1"], "nope"),
        (["{video}", "--set", "split.max_clip_s=abc"], "split.max_clip_s"),
        (["{video}", "--set", "split.min_clip_s=-1"], "split.min_clip_s"),
        (["{video}", "--set", "max_clip_s=4"], "section.key=value"),
        (["{video}", "--workers", "0"], "--workers"),
        (["{video}", "{tmp}/missing.mp4"], "missing.mp4"),
        (["{tmp}/*.nothing"], "no files match"),
        (["{tmp}/empty_dir"], "no video files"),
    ],
)
def test_more_user_mistakes_in_process(static, tmp_path, capsys, args, words):
    (tmp_path / "empty_dir").mkdir()
    args = [a.replace("{video}", str(static.path)).replace("{tmp}", str(tmp_path)) for a in args]
    assert main(["split", *args, "--out", str(tmp_path / "out"), "--quiet"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], captured.err
    assert not (tmp_path / "out" / "manifests").exists()


def test_help():
    top = run_module("--help")
    assert top.returncode == 0 and "split" in top.stdout and "status" in top.stdout
    split_help = run_module("split", "--help")
    assert split_help.returncode == 0
    for option in ["INPUT", "--out", "--workers", "--config", "--set", "caption"]:
        assert option in split_help.stdout, option
    assert run_module("split").returncode == 2  # INPUT is required: argparse's usage error


def test_real_process_with_default_out(static, tmp_path):
    """`--out` defaults to the working directory; progress goes to stderr, the summary to stdout."""
    result = run_module("split", static.path, "--workers", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "split: 1 videos processed, 0 already done" in result.stdout
    assert "Traceback" not in result.stderr
    videos, clips = read_manifests(tmp_path)
    assert videos.status.tolist() == ["ok"] and len(clips) == 1


def test_cli_import_stays_light():
    """Heavy modules load only when a stage runs, so `curate split --help` starts fast."""
    code = "import sys, curate.cli; print(sorted(m for m in ('numpy', 'av', 'pandas', 'pyarrow', 'torch') if m in sys.modules))"
    result = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_the_split_commands_own_process_never_loads_pandas_or_pyav(tmp_path, batch_inputs):
    """A split command (workers, merge, drop rules, summary) builds and reads its tables through
    `curate.arrow`, never pandas: importing it would cost every command 0.3 s of CPU (nor torch,
    with the default detector). Nor does it decode: PyAV and OpenCV load in the fork server its
    workers come from, while this process goes on with its own imports. The second run merges over
    the first one's manifests; bad inputs put error lines in the summary."""
    code = (
        "import sys; from curate.cli import main; "
        f"argv = ['split', *sys.argv[1:], '--out', {str(tmp_path)!r}, '--workers', '2', '--quiet']; "
        "codes = [main(argv), main([*argv, '--set', 'split.min_sharpness=1e9'])]; "
        "print(codes, sorted(m for m in ('av', 'cv2', 'pandas', 'torch') if m in sys.modules))"
    )
    result = subprocess.run([PYTHON, "-c", code, *map(str, batch_inputs)], capture_output=True, text=True, check=True)
    assert result.stdout.strip().splitlines()[-1] == "[0, 0] []", result.stdout + result.stderr
    assert f"{len(UNREADABLE)} errors" in result.stdout and "dropped (blurry)" in result.stdout
    videos, clips = read_manifests(tmp_path)
    assert (videos.status == "error").sum() == len(UNREADABLE) and len(clips) > 0


@pytest.mark.parametrize(
    "args, starts",
    [
        (["split", "a.mp4", "--out", "o"], True),
        (["split", "a.mp4", "--executor", "local"], True),
        (["run", "a.mp4", "--models", "tiny"], True),
        (["run", "a.mp4", "--executor", "ray"], False),
        (["split", "a.mp4", "--executor", "ray"], False),
        (["split", "--executor=ray", "a.mp4"], False),
        (["split", "--help"], False),
        (["status", "--out", "o"], False),
        ([], False),
    ],
)
def test_only_a_local_split_starts_its_fork_server_before_the_command_line_loads(args, starts):
    assert _begins_with_local_split(args) is starts


def test_a_rerun_with_new_thresholds_applies_them(tmp_path, good_videos):
    """Re-running a finished split with other thresholds decodes nothing, but its drop reasons
    follow the new thresholds, as the folder's config.yaml says they do."""
    inputs = [s.path for s in good_videos]
    assert split_cli(*inputs, "--out", tmp_path)[0] == 0
    kept_before = read_manifests(tmp_path)[1].drop_reason.isna().sum()
    code, stdout = split_cli(*inputs, "--out", tmp_path, "--set", "split.min_sharpness=1e9")
    assert code == 0 and f"0 videos processed, {len(inputs)} already done" in stdout
    clips = read_manifests(tmp_path)[1]
    assert kept_before > 0 and (clips.drop_reason == "blurry").all()
    assert yaml.safe_load((tmp_path / "manifests" / "config.yaml").read_text())["split"]["min_sharpness"] == 1e9


def test_the_quick_exit_still_runs_exit_hooks_flushes_and_keeps_the_exit_code():
    """`python -m curate` ends with os._exit (no interpreter teardown): exit hooks (Ray's
    shutdown, temporary folders) must still run, buffered output must still appear, and the
    command's exit code must survive."""
    code = (
        "import atexit, sys, curate.cli; atexit.register(print, 'hook ran'); "
        "print('buffered', end=' '); sys.stderr.write('to stderr'); curate.cli._exit_now(3)"
    )
    result = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True)
    assert (result.returncode, result.stdout, result.stderr) == (3, "buffered hook ran\n", "to stderr")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the server's environment from /proc")
@pytest.mark.parametrize("users", [None, "3"])
def test_the_fork_server_runs_numpy_on_one_blas_thread_unless_told_otherwise(users):
    """Workers run one per core: the server they fork from starts with OPENBLAS_NUM_THREADS=1, a
    setting for it alone (this process's environment is left as it was), unless the user set one."""
    code = (
        "import os, time, multiprocessing.forkserver as mp_forkserver\n"
        "from curate import forkserver\n"
        "forkserver.start(['curate.executor'])\n"
        "pid = mp_forkserver._forkserver._forkserver_pid\n"
        "while not (environ := open(f'/proc/{pid}/environ').read()):  # empty until its exec is done\n"
        "    time.sleep(0.001)\n"
        "entries = environ.split('\\0')\n"
        "server = dict(entry.split('=', 1) for entry in entries if '=' in entry)\n"
        "print(server.get('OPENBLAS_NUM_THREADS'), os.environ.get('OPENBLAS_NUM_THREADS'))\n"
    )
    assert _python_with("OPENBLAS_NUM_THREADS", users, code).split() == [users or "1", str(users)]


@pytest.mark.parametrize("users", [None, "20"])
def test_the_command_lets_blas_threads_sleep_at_once_unless_told_otherwise(users):
    """numpy's OpenBLAS threads would spin for 0.1 CPU-s after numpy loads (see curate.__main__)."""
    code = (
        "import atexit, os, sys; import curate.__main__ as entry\n"
        "atexit.register(lambda: print(os.environ.get('OPENBLAS_THREAD_TIMEOUT')))\n"
        "sys.argv = ['curate', 'status', '--help']\n"
        "entry.main()\n"
    )
    assert _python_with("OPENBLAS_THREAD_TIMEOUT", users, code).splitlines()[-1] == (users or "4")


def _python_with(name: str, value: str | None, code: str) -> str:
    """What `code` prints, run by a fresh interpreter whose environment has `name` set to `value`
    (None: unset)."""
    env = {key: setting for key, setting in os.environ.items() if key != name} | ({name: value} if value else {})
    result = subprocess.run([PYTHON, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_only_the_fork_server_loads_its_quick_exit_hook():
    """curate._forkserver_boot makes its process exit with code 0 at the end: the command's own
    process must never import it, or every exit code would become 0."""
    code = (
        "import sys; import curate.cli, curate.runner, curate.executor, curate.forkserver, curate.stages.split.stage; "
        "print('curate._forkserver_boot' in sys.modules)"
    )
    assert subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
