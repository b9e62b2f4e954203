"""Run a stage's units on a local process pool, with resumable, atomic per-unit outputs.

A unit is done once its marker `<unit_id>.done` exists in the stage's work folder (a local
folder, or a prefix in an object store that every worker writes to directly). Workers write each
output table of a unit atomically (`curate.storage.write_atomic`), then write the marker:
a SIGKILL at any instant loses at most the units in flight, and a re-run skips every unit with a
marker. A worker that dies (a crash inside FFmpeg, the OOM killer) breaks the pool; the executor
starts a new one, retries the units that were in flight one at a time, and a unit that kills a
worker on its own is recorded as failed by the stage itself (an error row), so one poisonous file
cannot stop a batch. An exception out of `process` (an infrastructure failure, or a bug) fails
only its unit: the others go on, and the unit, having no marker, is retried on the next run.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from curate import forkserver
from curate.devices import WorkerDevices
from curate.manifest import write_parquet_atomic
from curate.stages.base import Stage, Unit
from curate.storage import makedirs, write_text_atomic

_worker_stage: Stage | None = None  # the stage instance inside a worker process
_setup_error: Exception | None = None  # why the worker's setup failed, if it did

# What a stage records for a unit that killed its worker on every attempt (both executors).
WORKER_DIED = "the worker process died while processing this input"


def done_marker(work_dir: Path, unit_id: str) -> Path:
    return work_dir / f"{unit_id}.done"


def part_path(work_dir: Path, unit_id: str, table: str) -> Path:
    return work_dir / f"{unit_id}.{table}.parquet"


def is_done(work_dir: Path, unit_id: str) -> bool:
    return done_marker(work_dir, unit_id).exists()


def done_units(work_dir: Path) -> set[str]:
    """The ids of every finished unit in `work_dir`, from one listing: on an object store a
    check per unit would cost a request per unit."""
    return {marker.name.removesuffix(".done") for marker in work_dir.glob("*.done")}


def save_unit(work_dir: Path, unit_id: str, outputs: dict) -> None:
    """Write every output table atomically, then the marker that makes the unit count as done."""
    for table_name, table in outputs.items():
        write_parquet_atomic(table, part_path(work_dir, unit_id, table_name))
    write_text_atomic("", done_marker(work_dir, unit_id))


def setup_worker(stage: Stage, environ: dict[str, str] | None = None, devices: WorkerDevices | None = None) -> None:
    """Make `stage` this worker process's stage and set it up (a pool initializer; the Ray
    executor's workers call it too, with neither option: Ray sets their CUDA_VISIBLE_DEVICES).
    `environ`, when given, replaces the worker's environment; `devices`, when given, then picks
    the one GPU this worker sees, before `stage.setup()` can initialise CUDA."""
    global _worker_stage, _setup_error
    if environ is not None:
        os.environ.clear()
        os.environ.update(environ)
    _worker_stage = stage
    _setup_error = None
    try:
        if devices is not None:
            devices.pin()
        stage.setup()
    except Exception as exc:  # raised from an initializer it would break the pool and blame units
        _setup_error = exc


def run_unit(unit: Unit, work_dir: Path) -> tuple[str, dict]:
    """Process one unit with this worker's stage and save its outputs; returns (unit id, stats)."""
    assert _worker_stage is not None
    if _setup_error is not None:
        raise RuntimeError(f"{_worker_stage.name} setup failed: {type(_setup_error).__name__}: {_setup_error}")
    outputs, stats = _worker_stage.process(unit)
    save_unit(work_dir, unit.unit_id, outputs)
    return unit.unit_id, stats


class LocalExecutor:
    """Runs units on `workers` processes (default: one per core), forks of a clean fork server
    (`curate.forkserver`), never of this process. With `gpu_ids` (a model stage's
    `gpu_ids()`), each worker sees one of those GPUs alone, round-robin (`curate.devices`)."""

    def __init__(self, workers: int | None = None, gpu_ids: list[str] | None = None):
        self.workers = max(1, workers or os.cpu_count() or 1)
        self.gpu_ids = list(gpu_ids or [])

    def run(
        self,
        stage: Stage,
        units: Iterable[Unit],
        work_dir: Path,
        on_done: Callable[[str, dict], None] = lambda unit_id, stats: None,
    ) -> dict[str, str]:
        """Process every unit without a done marker; call `on_done` as each finishes. Returns the
        units whose `process` raised, with the error (they stay not done).

        When a worker dies, every unit in flight at that moment is a suspect. Suspects are then
        run one at a time, so a unit is blamed (recorded as failed) only for a crash it caused
        alone, never for a neighbour's.
        """
        makedirs(work_dir)
        done = done_units(work_dir)
        todo = {u.unit_id: u for u in units if u.unit_id not in done}
        errors: dict[str, str] = {}
        suspects: set[str] = set()
        while todo:
            clean = [u for unit_id, u in todo.items() if unit_id not in suspects]
            if clean:
                suspects |= self._run_pool(stage, clean, self.workers, work_dir, todo, on_done, errors)
                continue
            for unit_id in sorted(suspects & todo.keys()):
                if is_done(work_dir, unit_id):  # it had finished just before the pool broke
                    todo.pop(unit_id)
                    on_done(unit_id, {})
                elif self._run_pool(stage, [todo[unit_id]], 1, work_dir, todo, on_done, errors):
                    outputs, stats = stage.failed(todo.pop(unit_id), WORKER_DIED)
                    save_unit(work_dir, unit_id, outputs)
                    on_done(unit_id, stats)
            suspects.clear()
        return errors

    def _run_pool(self, stage, units, workers: int, work_dir: Path, todo: dict, on_done, errors: dict) -> set[str]:
        """Run `units` on a fresh pool, taking each finished or failed unit out of `todo`;
        return the ids in flight if a worker died (else an empty set)."""
        workers = min(workers, len(units))
        context = forkserver.context(stage.preload)
        # The fork server was started with the environment of its first pool: pass the current one.
        # Each pool numbers its own workers, so one started after a worker died hands out every GPU again.
        devices = WorkerDevices(self.gpu_ids, context) if self.gpu_ids else None
        initargs = (stage, dict(os.environ), devices)
        pool = ProcessPoolExecutor(workers, mp_context=context, initializer=setup_worker, initargs=initargs)
        pending: dict = {}
        queue = deque(units)
        try:
            # A short queue per worker: a crash only makes suspects of units that had started.
            while queue or pending:
                while queue and len(pending) < 2 * workers:
                    unit = queue.popleft()
                    pending[pool.submit(run_unit, unit, work_dir)] = unit
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    unit = pending.pop(future)
                    try:
                        unit_id, stats = future.result()
                    except BrokenProcessPool:
                        pending[future] = unit
                        raise
                    except Exception as exc:  # one unit's failure must not stop the batch
                        errors[unit.unit_id] = f"{type(exc).__name__}: {exc}"
                        todo.pop(unit.unit_id, None)
                        continue
                    todo.pop(unit_id, None)
                    on_done(unit_id, stats)
        except BrokenProcessPool:
            return {unit.unit_id for unit in pending.values()}
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return set()
