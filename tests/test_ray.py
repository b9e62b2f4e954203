"""`--executor ray`: the same manifests and shards as the local executor, resumes across the two
executors, and the local executor's failure rules (a unit that kills its worker on every attempt
becomes an error row; an exception fails only its unit).

One local Ray instance (2 CPUs) serves the module: executor tests run in this process, and CLI
runs join it with --ray-address, except one that starts and stops its own instance.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import RUN_SETTINGS, curate, kill_when, read_manifests, run_module

from curate.executor import WORKER_DIED, is_done, part_path
from curate.stages.base import Stage, Unit

ray = pytest.importorskip("ray")
from curate.ray_executor import RayExecutor, connect  # noqa: E402  (after the skip: it needs ray)

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def cluster() -> str:
    """A local Ray instance for the module; returns its address for `--ray-address`."""
    connect(num_cpus=2)
    # Ray workers cannot import this test module by name: ship its stage classes by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray.get_runtime_context().gcs_address
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    ray.shutdown()


def state(out: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, str], pd.DataFrame]:
    """Everything a run leaves that users read: manifests, shard bytes, embeddings."""
    videos, clips = read_manifests(out)
    shards = {p.name: hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted((out / "shards").glob("*"))}
    embeddings = out / "manifests" / "embeddings"
    vectors = pd.read_parquet(embeddings).sort_values("clip_id", ignore_index=True) if embeddings.exists() else pd.DataFrame()
    return videos, clips, shards, vectors


def assert_same(got: tuple, expected: tuple) -> None:
    for a, b in zip(got, expected, strict=True):
        if isinstance(a, pd.DataFrame):
            pd.testing.assert_frame_equal(a, b)
        else:
            assert a == b


def test_run_on_ray_gives_exactly_the_local_results(cluster, run_videos, finished_run, tmp_path):
    """Every stage (tasks for split, motion, pack; actors for the tiny models) against the local pool."""
    on_ray = tmp_path / "ray"
    stdout = curate("run", run_videos, "--out", on_ray, *RUN_SETTINGS, "--executor", "ray", "--ray-address", cluster)
    assert "aesthetic: " in stdout and "(raylet)" not in stdout
    expected, got = state(finished_run[0]), state(on_ray)
    assert len(expected[1]) > 0 and any(name.endswith(".tar") for name in expected[2]) and len(expected[3]) > 0
    assert_same(got, expected)


def test_a_split_interrupted_under_one_executor_resumes_under_the_other(cluster, run_videos, tmp_path):
    curate("split", run_videos, "--out", tmp_path / "whole")
    expected = read_manifests(tmp_path / "whole")
    for name, first, then in (
        ("from-local", ["--workers", "2"], ["--executor", "ray"]),
        ("from-ray", ["--executor", "ray", "--ray-address", cluster], []),
    ):
        out = tmp_path / name
        work = out / "manifests" / ".work"

        def started(work=work) -> bool:
            return any(work.glob("split-*/*.done"))

        assert kill_when(["split", run_videos, "--out", out, "--quiet", *first], tmp_path / "logs", started)
        assert not (out / "manifests" / "videos.parquet").exists()  # killed before the manifests were written
        # No --ray-address for the Ray resume: the command starts its own local instance and stops it.
        result = run_module("split", run_videos, "--out", out, "--quiet", *then, env={"RAY_ADDRESS": ""})
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
        assert "already done" in result.stdout and "0 already done" not in result.stdout
        assert_same(read_manifests(out), expected)


def test_user_mistakes_about_ray_are_one_line_errors(cluster, run_videos, tmp_path):
    for extra, words in (
        (["--executor", "ray", "--ray-address", cluster, "--set", "split.ray_num_cpus=4"], "no node of the Ray cluster has 4 CPUs"),
        (["--executor", "ray", "--ray-address", "127.0.0.1:9"], "cannot reach a Ray cluster at 127.0.0.1:9"),
        (["--executor", "ray", "--ray-address", "nonsense"], "HOST:PORT"),
        (["--ray-address", "127.0.0.1:6379"], "--ray-address needs --executor ray"),
    ):
        result = run_module("split", run_videos, "--out", tmp_path / "out", "--quiet", *extra, timeout=60)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], result.stderr


# -- failures, on the executor directly ---------------------------------------------------------

SCHEMA = pa.schema([("unit", pa.string()), ("result", pa.string())])


class _EchoStage(Stage):
    """Echoes each unit; SIGKILLs its own worker on units named 'poison' (a segfault, the OOM
    killer), raises on units named 'buggy'."""

    name = "echo"

    def process(self, unit: Unit):
        if unit.unit_id.startswith("poison"):
            os.kill(os.getpid(), signal.SIGKILL)
        if unit.unit_id.startswith("buggy"):
            raise ValueError("something unexpected")
        return {"rows": pa.table({"unit": [unit.unit_id], "result": ["ok"]}, schema=SCHEMA)}, {"frames": 1}

    def failed(self, unit: Unit, message: str):
        return {"rows": pa.table({"unit": [unit.unit_id], "result": [message]}, schema=SCHEMA)}, {}


class _ModelEchoStage(_EchoStage):
    """The same on long-lived actors, with a setup that must run once per actor."""

    loads_model = True

    def setup(self):
        self.setups = getattr(self, "setups", 0) + 1

    def process(self, unit: Unit):
        if getattr(self, "setups", 0) != 1:
            raise RuntimeError("setup must run once per actor, before its first unit")
        return super().process(unit)


class _BrokenSetupStage(_ModelEchoStage):
    def setup(self):
        raise OSError("weights file vanished")


def _results(work_dir: Path, units: list[Unit]) -> dict[str, str]:
    return {u.unit_id: pq.read_table(part_path(work_dir, u.unit_id, "rows")).column("result")[0].as_py() for u in units}


@pytest.mark.parametrize("stage", [_EchoStage(), _ModelEchoStage()], ids=["tasks", "actors"])
def test_a_unit_that_kills_its_worker_every_time_is_recorded_and_the_rest_finish(cluster, tmp_path, stage):
    units = [Unit(f"good{i}", None) for i in range(5)] + [Unit("poison", None)]
    finished = []
    errors = RayExecutor(workers=2).run(stage, units, tmp_path, lambda unit_id, stats: finished.append(unit_id))

    assert errors == {}
    assert sorted(finished) == sorted(u.unit_id for u in units)
    assert all(is_done(tmp_path, u.unit_id) for u in units)
    results = _results(tmp_path, units)
    assert results["poison"] == WORKER_DIED
    assert all(results[f"good{i}"] == "ok" for i in range(5))


def test_an_exception_fails_only_its_unit_which_the_local_executor_then_retries(cluster, tmp_path):
    from curate.executor import LocalExecutor

    units = [Unit("good0", None), Unit("buggy", None), Unit("good1", None)]
    errors = RayExecutor().run(_ModelEchoStage(), units, tmp_path)

    assert errors == {"buggy": "ValueError: something unexpected"}
    assert is_done(tmp_path, "good0") and is_done(tmp_path, "good1") and not is_done(tmp_path, "buggy")
    ran = []
    LocalExecutor(workers=1).run(Stage(), [Unit("good0", None)], tmp_path, lambda unit_id, stats: ran.append(unit_id))
    assert ran == []  # done under Ray counts as done locally


def test_a_failing_setup_fails_the_units_without_blaming_them(cluster, tmp_path):
    units = [Unit("good0", None), Unit("good1", None)]
    errors = RayExecutor(workers=2).run(_BrokenSetupStage(), units, tmp_path)
    assert set(errors) == {"good0", "good1"}
    assert all("echo setup failed: OSError: weights file vanished" in message for message in errors.values())
    assert not any(is_done(tmp_path, u.unit_id) for u in units)


class _DiesOnceStage(_EchoStage):
    """SIGKILLs its worker the first time it meets a unit named 'flaky' (a marker file remembers
    it across processes), then processes it normally: a worker lost once, not a poisonous input."""

    def __init__(self, marker: Path):
        self.marker = marker

    def process(self, unit: Unit):
        if unit.unit_id == "flaky" and not self.marker.exists():
            self.marker.write_text("killed once")
            os.kill(os.getpid(), signal.SIGKILL)
        return super().process(unit)


class _ModelDiesOnceStage(_DiesOnceStage):
    loads_model = True


@pytest.mark.parametrize("kind", [_DiesOnceStage, _ModelDiesOnceStage], ids=["tasks", "actors"])
def test_a_worker_killed_mid_unit_is_replaced_and_the_unit_retried(cluster, tmp_path, kind):
    work_dir, marker = tmp_path / "work", tmp_path / "killed"
    units = [Unit("good0", None), Unit("flaky", None), Unit("good1", None)]
    errors = RayExecutor(workers=2).run(kind(marker), units, work_dir)
    assert errors == {} and marker.exists()  # the worker really died once
    assert _results(work_dir, units) == {"good0": "ok", "flaky": "ok", "good1": "ok"}  # retried, not blamed
