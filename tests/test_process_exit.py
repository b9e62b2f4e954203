"""How a command's processes end: with the command, even when it is SIGKILLed, and quietly when
whatever reads its stdout stops reading (`| head -1`).

Real `python -m curate` commands in their own sessions; the process group and /proc tell which
of their processes are still there. Waiting loops only give the processes time to go: nothing
asserts on how long anything takes.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import PYTHON, REPO, curate

from curate.synthetic import Join, Shot, make_video


def group(pgid: int) -> dict[int, int]:
    """The live processes of process group `pgid`: pid -> parent pid."""
    members = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # it ended while we looked
            continue
        state, ppid, pgrp = stat.rsplit(")", 1)[1].split()[:3]  # the name in (...) may hold spaces
        if int(pgrp) == pgid and state != "Z":
            members[int(entry.name)] = int(ppid)
    return members


def has_open(pid: int, path: Path) -> bool:
    """Whether process `pid` has `path` open."""
    try:
        return any(os.readlink(fd) == str(path) for fd in Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False


def wait_for(condition, seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def read_to_end(stream, seconds: float = 30) -> bool:
    """Read `stream` until its end; False if it has not ended after `seconds` (a writer is
    still alive somewhere)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ready, _, _ = select.select([stream], [], [], 0.1)
        if ready and not os.read(stream.fileno(), 65536):
            return True
    return False


@pytest.fixture(scope="module")
def videos(tmp_path_factory, long_take, edited, motion) -> list[Path]:
    folder = tmp_path_factory.mktemp("exit_videos")
    for sample in (long_take, edited, motion):
        shutil.copy(sample.path, folder / sample.path.name)
    return sorted(folder.iterdir())


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_sigkill_of_the_command_ends_the_fork_server_and_its_workers(videos, tmp_path):
    args = ["split", videos[0].parent, "--out", tmp_path / "out", "--workers", "1", "--quiet"]
    command = subprocess.Popen(
        [PYTHON, "-m", "curate", *map(str, args)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        # A worker is a fork of the fork server, itself a child of the command.
        def busy_worker() -> bool:
            members = group(command.pid)
            workers = [pid for pid, parent in members.items() if parent in members and parent != command.pid]
            return any(has_open(pid, video) for pid in workers for video in videos)

        wait_for(lambda: busy_worker() or command.poll() is not None, 120)
        assert command.poll() is None, "the command finished before a worker was seen decoding"
        assert len(group(command.pid)) >= 3  # the command, the fork server, a worker (and a resource tracker)
        command.send_signal(signal.SIGKILL)
        command.wait()
        assert read_to_end(command.stdout), "a process left behind still holds the command's stdout open"
        assert wait_for(lambda: not group(command.pid)), f"left behind: {group(command.pid)}"
    finally:
        command.stdout.close()
        if group(command.pid):
            os.killpg(command.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def finished(videos, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("exit_split") / "out"
    curate("split", videos[1], "--out", out)
    return out


def run_with_closed_stdout(*args) -> subprocess.CompletedProcess:
    """`python -m ARGS` with stdout a pipe whose reader is gone before the command starts, as
    with `| head -1` once head has its line."""
    process = subprocess.Popen([PYTHON, "-m", *map(str, args)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    process.stdout.close()
    stderr = process.stderr.read()
    process.stderr.close()
    return subprocess.CompletedProcess(process.args, process.wait(timeout=120), None, stderr)


@pytest.mark.parametrize("command", [["status"], ["split", "VIDEO", "--quiet"], ["config"]])
def test_a_closed_stdout_ends_a_command_quietly(command, finished, videos):
    args = [videos[1] if a == "VIDEO" else a for a in command]
    result = run_with_closed_stdout("curate", *args, *([] if command == ["config"] else ["--out", finished]))
    assert result.stderr == ""  # no traceback, no "Exception ignored"
    assert result.returncode == 141  # what a shell reports for a command ended by a closed pipe


def test_run_goes_on_with_every_stage_when_stdout_closes(tmp_path):
    """`run` prints a line after each stage: a closed stdout must not stop the stages after it."""
    video = tmp_path / "short.mp4"
    make_video(video, [Shot(72, 1), Shot(72, 2, pan=(1.5, 0.5))], [Join("cut")], 160, 90, 24)
    out = tmp_path / "out"
    settings = ["--models", "tiny", "--set", "aesthetic.min=0", "pack.short_side=64", "--quiet"]
    result = run_with_closed_stdout("curate", "run", video, "--out", out, *settings)
    assert result.stderr == ""
    assert result.returncode == 141  # the output was cut short, but every stage ran:
    clips = pd.read_parquet(out / "manifests" / "clips.parquet")
    assert clips.shard.notna().sum() == clips.drop_reason.isna().sum() > 0
