"""LocalExecutor: a worker that dies is replaced, and an input that keeps killing workers is
recorded by the stage as failed instead of stopping the batch."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq

from curate.executor import LocalExecutor, is_done, part_path
from curate.stages.base import Stage, Unit

SCHEMA = pa.schema([("unit", pa.string()), ("result", pa.string())])


class _PoisonStage(Stage):
    """Kills its worker process on units named 'poison'; echoes every other unit."""

    name = "poison"

    def process(self, unit: Unit):
        if unit.unit_id.startswith("poison"):
            os._exit(1)  # what a segfault inside FFmpeg looks like to the pool
        return {"rows": pa.table({"unit": [unit.unit_id], "result": ["ok"]}, schema=SCHEMA)}, {}

    def failed(self, unit: Unit, message: str):
        return {"rows": pa.table({"unit": [unit.unit_id], "result": [message]}, schema=SCHEMA)}, {}


def test_a_unit_that_kills_its_worker_is_recorded_and_the_rest_finish(tmp_path):
    units = [Unit(f"good{i}", None) for i in range(4)] + [Unit("poison", None)]
    finished = []
    LocalExecutor(workers=2).run(_PoisonStage(), units, tmp_path, lambda unit_id, stats: finished.append(unit_id))

    assert sorted(finished) == sorted(u.unit_id for u in units)
    assert all(is_done(tmp_path, u.unit_id) for u in units)
    results = {u.unit_id: pq.read_table(part_path(tmp_path, u.unit_id, "rows")).column("result")[0].as_py() for u in units}
    assert results["poison"] == "the worker process died while processing this input"
    assert all(results[f"good{i}"] == "ok" for i in range(4))


def test_done_units_are_not_run_again(tmp_path):
    units = [Unit("good0", None), Unit("good1", None)]
    LocalExecutor(workers=1).run(_PoisonStage(), units, tmp_path)
    first = part_path(tmp_path, "good0", "rows").stat().st_mtime_ns
    ran = []
    LocalExecutor(workers=1).run(_PoisonStage(), units, tmp_path, lambda unit_id, stats: ran.append(unit_id))
    assert ran == []
    assert part_path(tmp_path, "good0", "rows").stat().st_mtime_ns == first


class _BuggyStage(_PoisonStage):
    """Raises on units named 'buggy' (an unexpected exception, not a crash)."""

    def process(self, unit: Unit):
        if unit.unit_id.startswith("buggy"):
            raise ValueError("something unexpected")
        return super().process(unit)


def test_an_exception_fails_only_its_unit_which_is_retried_next_run(tmp_path):
    units = [Unit("good0", None), Unit("buggy", None), Unit("good1", None)]
    errors = LocalExecutor(workers=2).run(_BuggyStage(), units, tmp_path)

    assert errors == {"buggy": "ValueError: something unexpected"}
    assert is_done(tmp_path, "good0") and is_done(tmp_path, "good1")
    assert not is_done(tmp_path, "buggy")
    ran = []
    LocalExecutor(workers=1).run(_PoisonStage(), units, tmp_path, lambda unit_id, stats: ran.append(unit_id))
    assert ran == ["buggy"]  # the next run retries exactly the unit that failed


class _BrokenSetupStage(_PoisonStage):
    """Its per-worker setup fails, as a model that cannot load would."""

    def setup(self):
        raise OSError("weights file vanished")


def test_a_failing_setup_fails_the_units_without_blaming_them(tmp_path):
    """A setup error is an infrastructure failure: no unit is recorded as done (or as a bad
    input); each reports the reason and is retried on the next run."""
    units = [Unit("good0", None), Unit("good1", None)]
    errors = LocalExecutor(workers=2).run(_BrokenSetupStage(), units, tmp_path)
    assert set(errors) == {"good0", "good1"}
    assert all("setup failed: OSError: weights file vanished" in message for message in errors.values())
    assert not any(is_done(tmp_path, u.unit_id) for u in units)


class _EnvStage(_PoisonStage):
    """Records, for each unit, the worker's value of VIDCURATE_TEST_VALUE."""

    def process(self, unit: Unit):
        value = os.environ.get("VIDCURATE_TEST_VALUE", "<unset>")
        return {"rows": pa.table({"unit": [unit.unit_id], "result": [value]}, schema=SCHEMA)}, {}


def test_workers_see_the_environment_of_their_pool_not_of_an_earlier_one(tmp_path, monkeypatch):
    """Workers are forks of a server started by this process's first pool; a variable set or
    removed since (credentials for an object store, an offline flag) must still reach them."""

    def result(work_dir, unit_id):
        return pq.read_table(part_path(work_dir, unit_id, "rows")).column("result")[0].as_py()

    monkeypatch.setenv("VIDCURATE_TEST_VALUE", "first")
    LocalExecutor(workers=1).run(_EnvStage(), [Unit("a", None)], tmp_path / "one")
    monkeypatch.setenv("VIDCURATE_TEST_VALUE", "second")
    LocalExecutor(workers=1).run(_EnvStage(), [Unit("b", None)], tmp_path / "two")
    monkeypatch.delenv("VIDCURATE_TEST_VALUE")
    LocalExecutor(workers=1).run(_EnvStage(), [Unit("c", None)], tmp_path / "three")

    assert [result(tmp_path / "one", "a"), result(tmp_path / "two", "b"), result(tmp_path / "three", "c")] == ["first", "second", "<unset>"]
