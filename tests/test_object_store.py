"""Inputs and `--out` in an object store: every command against a real S3 API on loopback.

moto's server answers the S3 protocol on 127.0.0.1 for the module; the commands run as real
processes that find it through the environment (AWS_ENDPOINT_URL and dummy credentials), as a
user's would find AWS or MinIO. Nothing of vidcurate is mocked. The reference is the same videos
run from local disk (`finished_run`): the manifests must be the same apart from `path`.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import shutil
import tarfile
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import RUN_SETTINGS, curate, kill_when, read_manifests, run_module

s3fs = pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

OUT = "s3://vc-out"
VIDEOS = "s3://vc-in/videos/"


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on a free loopback port, with buckets vc-in and vc-out; this process's
    environment (and so every command's) points at it. Yields an s3fs file system on it."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one log line per request otherwise
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": "/dev/null",  # a developer's own profile must not redirect the commands
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    }
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        mp.delenv("AWS_PROFILE", raising=False)
        fs = s3fs.S3FileSystem(use_listings_cache=False, skip_instance_cache=True)
        for bucket in ("vc-in", "vc-out"):
            fs.mkdir(bucket)
        yield fs
    server.stop()


@pytest.fixture(scope="module")
def s3_run(s3, run_videos) -> tuple[str, str]:
    """run_videos uploaded to VIDEOS, then one uninterrupted `curate run` from there into
    s3://vc-out/work with RUN_SETTINGS: (the output URL, stdout)."""
    s3.put(f"{run_videos}/", VIDEOS, recursive=True)
    out = f"{OUT}/work"
    return out, curate("run", VIDEOS, "--out", out, *RUN_SETTINGS, "--quiet")


def s3_state(fs, out: str) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, bytes]]:
    """The manifests as users read them (pandas straight from the store) and the shards' bytes."""
    videos = pd.read_parquet(f"{out}/manifests/videos.parquet")
    clips = pd.read_parquet(f"{out}/manifests/clips.parquet")
    shards = {name.rsplit("/", 1)[1]: fs.cat_file(name) for name in sorted(fs.find(f"{out}/shards"))}
    return videos, clips, shards


def local_state(out: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, bytes]]:
    videos, clips = read_manifests(out)
    return videos, clips, {p.name: p.read_bytes() for p in sorted((out / "shards").iterdir())}


def members(tar: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        return {m.name: archive.extractfile(m).read() for m in archive.getmembers()}


def without_path(member: bytes) -> dict:
    row = json.loads(member)
    row.pop("path")
    return row


def test_a_run_from_and_to_s3_matches_the_local_run(s3, s3_run, finished_run):
    out, stdout = s3_run
    assert f"in {out}/shards" in stdout
    videos, clips, shards = s3_state(s3, out)
    local_videos, local_clips, local_shards = local_state(finished_run[0])
    assert videos.path.str.startswith(VIDEOS).all() and clips.path.str.startswith(VIDEOS).all()
    assert sorted(videos.path.str.rsplit("/", n=1).str[1]) == sorted(local_videos.path.map(lambda p: Path(p).name))
    # The same ids (content_id through ranged reads), rows, scores and captions.
    pd.testing.assert_frame_equal(videos.drop(columns="path"), local_videos.drop(columns="path"))
    pd.testing.assert_frame_equal(clips.drop(columns="path"), local_clips.drop(columns="path"))
    assert clips.shard.notna().any()
    # Same shards, same index; each sample's mp4 and caption are byte for byte the same, and its
    # json is the same row (whose path is the URL).
    assert shards.keys() == local_shards.keys() and "index.json" in shards
    assert shards["index.json"] == local_shards["index.json"]
    for name in (n for n in shards if n.endswith(".tar")):
        got, expected = members(shards[name]), members(local_shards[name])
        assert list(got) == list(expected)
        for member in got:
            same = without_path if member.endswith(".json") else lambda data: data
            assert same(got[member]) == same(expected[member]), member
    embeddings = pd.read_parquet(f"{out}/manifests/embeddings").sort_values("clip_id", ignore_index=True)
    local = pd.read_parquet(finished_run[0] / "manifests" / "embeddings").sort_values("clip_id", ignore_index=True)
    pd.testing.assert_frame_equal(embeddings, local)
    assert not list(s3.glob(f"{out}/**/*.tmp")), "no temporary objects: every write is one put"


def test_running_again_on_s3_is_a_no_op(s3, s3_run):
    out, _ = s3_run
    before = s3_state(s3, out)
    stdout = curate("run", VIDEOS, "--out", out, *RUN_SETTINGS, "--quiet")
    assert "split: 0 videos processed" in stdout and "(0 written now)" in stdout and "pack: 0 clips encoded" in stdout
    after = s3_state(s3, out)
    pd.testing.assert_frame_equal(before[1], after[1])
    assert before[2] == after[2]


def test_a_run_on_s3_killed_and_run_again_ends_as_an_uninterrupted_one(s3, s3_run, tmp_path):
    out = f"{OUT}/resume"
    args = ["run", VIDEOS, "--out", out, *RUN_SETTINGS, "--quiet"]
    work = f"{out}/manifests/.work"

    def appeared(pattern: str):
        """True once an object matches; asks the store at most 5 times a second."""
        last = [0.0]

        def check() -> bool:
            if time.monotonic() - last[0] < 0.2:
                return False
            last[0] = time.monotonic()
            return bool(s3.glob(f"{work}/{pattern}"))

        return check

    assert kill_when(args, tmp_path / "logs", appeared("motion-*/*.done"))
    kill_when(args, tmp_path / "logs", appeared("pack-*/*.done"))
    stdout = curate(*args)
    assert "already done" in stdout
    expected, got = s3_state(s3, s3_run[0]), s3_state(s3, out)
    pd.testing.assert_frame_equal(got[0], expected[0])
    pd.testing.assert_frame_equal(got[1], expected[1])
    assert not got[1].clip_id.duplicated().any()
    assert got[2] == expected[2]  # same input URLs: shards byte for byte


def test_status_filter_pack_and_report_on_s3(s3, s3_run):
    out = f"{OUT}/tuned"
    s3.copy(f"{s3_run[0]}/", f"{out}/", recursive=True)  # a copy: the other tests read the original
    status = curate("status", "--out", out)
    assert f"manifests: {out}/manifests/" in status and "pack: " in status and f"in {out}/shards/" in status
    clips = pd.read_parquet(f"{out}/manifests/clips.parquet")
    kept = clips[clips.drop_reason.isna()]
    cut = float(kept.aesthetic_score.median())  # drops about half of the kept clips
    stdout = curate("filter", "--out", out, "--set", f"aesthetic.min={cut!r}")
    now = int((clips.drop_reason.isna() & (clips.aesthetic_score >= cut)).sum())
    assert stdout.startswith(f"filter: {len(kept)} clips kept before, {now} now")
    assert yaml.safe_load(s3.cat_file(f"{out}/manifests/config.yaml"))["aesthetic"]["min"] == cut  # remembered in the store

    # Fewer samples, fewer shards: pack rewrites the index and deletes the shards left over.
    shards_before = s3.glob(f"{out}/shards/*.tar")
    curate("pack", "--out", out, "--set", "pack.short_side=64", "pack.max_shard_samples=4")
    index = json.loads(s3.cat_file(f"{out}/shards/index.json"))
    shards = sorted(name.rsplit("/", 1)[1] for name in s3.glob(f"{out}/shards/*.tar"))
    assert shards == [s["url"] for s in index["shardlist"]] and len(shards) < len(shards_before)
    assert sum(s["nsamples"] for s in index["shardlist"]) == now

    stdout = curate("report", "--out", out, "--max-clips", "6")
    assert f"{out}/report/index.html" in stdout
    page = s3.cat_file(f"{out}/report/index.html").decode()
    assert page.count('class="preview"') == 6  # previews decoded from the videos in the store
    assert s3.info(f"{out}/report/index.html")["ContentType"] == "text/html"


def test_bad_objects_become_error_rows_as_bad_files_do(s3, bad_inputs, tmp_path):
    folder = tmp_path / "bad"
    shutil.copytree(next(iter(bad_inputs.values())).parent, folder)
    names = sorted(p.name for p in bad_inputs.values()) + ["missing.mp4"]
    (folder / "list.txt").write_text("\n".join(names) + "\n")  # relative to the list: local files, or objects
    s3.put(f"{folder}/", "s3://vc-in/bad/", recursive=True)
    curate("split", folder / "list.txt", "--out", tmp_path / "local")
    curate("split", "s3://vc-in/bad/list.txt", "--out", f"{OUT}/bad")
    local_videos, local_clips = read_manifests(tmp_path / "local")
    videos = pd.read_parquet(f"{OUT}/bad/manifests/videos.parquet")
    clips = pd.read_parquet(f"{OUT}/bad/manifests/clips.parquet")
    assert list(videos.path) == [f"s3://vc-in/bad/{name}" for name in names]
    assert (videos.status == "error").sum() == 6  # the unreadable five and the missing object
    assert videos.error.iloc[-1] == "cannot read file: No such file or directory"
    pd.testing.assert_frame_equal(videos.drop(columns="path"), local_videos.drop(columns="path"))
    pd.testing.assert_frame_equal(clips.drop(columns="path"), local_clips.drop(columns="path"))


def test_prefixes_and_globs_list_objects_as_folders_list_files(s3, tmp_path):
    from curate.inputs import collect_inputs

    local = tmp_path / "tree"
    for name in ("a-b.mp4", "a/b.mp4", "a/c/d.MKV", "a/notes.txt", "z.webm"):
        (local / name).parent.mkdir(parents=True, exist_ok=True)
        (local / name).write_bytes(hashlib.sha1(name.encode()).digest() * 100)
    s3.put(f"{local}/", "s3://vc-in/tree/", recursive=True)
    for pattern in ("", "**/*.mp4", "a/*"):
        here = collect_inputs([str(local / pattern) if pattern else str(local)])
        there = collect_inputs([f"s3://vc-in/tree/{pattern}"])
        assert [v.path.removeprefix(f"{local}/") for v in here] == [v.path.removeprefix("s3://vc-in/tree/") for v in there]
        assert [v.video_id for v in here] == [v.video_id for v in there]


def test_store_mistakes_are_one_line_errors(s3, run_videos, tmp_path):
    for args, words in (
        (["split", run_videos, "--out", "s3://no-such-bucket/work", "--quiet"], "no bucket 'no-such-bucket'"),
        (
            ["split", "s3://vc-in/nothing-here/", "--out", tmp_path / "out", "--quiet"],
            "no such file or directory: s3://vc-in/nothing-here/",
        ),
        (["status", "--out", f"{OUT}/never-run"], "no manifests in s3://vc-out/never-run/manifests/"),
        (["split", run_videos, "--out", "nosuchprotocol://bucket/work", "--quiet"], "cannot use nosuchprotocol://bucket/work"),
    ):
        result = run_module(*args, timeout=60)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], result.stderr


@pytest.mark.ray
def test_ray_workers_write_their_units_straight_to_the_store(s3, s3_run, finished_run):
    pytest.importorskip("ray")
    out = f"{OUT}/ray"
    result = run_module("split", VIDEOS, "--out", out, "--quiet", "--executor", "ray", "--workers", "2", env={"RAY_ADDRESS": ""})
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert s3.glob(f"{out}/manifests/.work/split-*/*.done")
    videos, clips = (pd.read_parquet(f"{out}/manifests/{name}.parquet") for name in ("videos", "clips"))
    expected_videos, expected_clips = read_manifests(finished_run[0])
    pd.testing.assert_frame_equal(videos.drop(columns="path"), expected_videos.drop(columns="path"))
    split_columns = list(clips.columns)  # a split alone: the reference's split columns, no scores
    pd.testing.assert_frame_equal(
        clips.drop(columns=["path", "drop_reason"]), expected_clips[split_columns].drop(columns=["path", "drop_reason"])
    )


def test_the_trainer_streams_shards_from_the_store(s3, train_shards, tmp_path):
    """`python -m train --shards s3://...` (an index.json or a prefix) reads the same samples in
    the same order as from local disk: the same losses."""
    from train.__main__ import main as train

    s3.put(f"{train_shards}/", "s3://vc-in/shards/", recursive=True)
    settings = ["--steps", "10", "--quiet", "--set", "num_workers=0", "sample_prompts=[]", "log_every=5"]
    losses = {}
    for name, shards in (("local", train_shards), ("index", "s3://vc-in/shards/index.json"), ("prefix", "s3://vc-in/shards")):
        assert train(["--shards", str(shards), "--out", str(tmp_path / name), *settings]) == 0
        losses[name] = [json.loads(line)["loss"] for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    assert losses["index"] == losses["local"] == losses["prefix"]
