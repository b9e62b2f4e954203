"""Run a stage's units on a Ray cluster: the same units, outputs and markers as `LocalExecutor`.

Units of ordinary stages run as Ray tasks; stages that load a model (`Stage.loads_model`) run on
long-lived actors, each setting the stage up once and taking one unit at a time. Every unit is
written by the same `save_unit` as on the local executor, into the same work folder, so the
manifests are identical and a run begun under one executor resumes under the other. The work
folder must therefore be one every node reaches: an object-store URL (workers get it unchanged
and write their parts straight to the store), or a folder on a shared file system.

Failures, as on the local executor: an exception out of `process` fails only its unit (no marker,
retried next run). A worker killed while processing (a crash inside FFmpeg, the OOM killer) is
replaced and the unit retried by Ray itself; a unit that kills its worker on every attempt is
recorded by the stage as failed (an error row). Each task runs alone in its worker process, and
an actor holds one unit at a time, so a death is only ever blamed on the unit that was running.

`ray` is imported only here, and only when this executor is used.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import uuid
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from pathlib import Path

from curate.errors import ClusterUnavailable, ConfigError
from curate.stages.base import Resources, Stage, Unit

RETRIES = 2  # attempts after the first for a unit whose worker died (Ray's max_retries / max_task_retries)
PROBE_TIMEOUT_S = 5.0  # ray.init retries an unreachable address for minutes: fail fast instead


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ClusterUnavailable("--executor ray needs Ray: pip install 'vidcurate[ray]'") from None
    return ray


@contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None):
    """Connect to the cluster at `address` (or RAY_ADDRESS) for the length of a command, or start
    a local Ray instance with `num_cpus` CPUs (default: every core) and stop it afterwards.
    Does nothing if this process is already connected (a caller that manages Ray itself)."""
    ray = _import_ray()
    if ray.is_initialized():
        yield
        return
    connect(address, num_cpus)
    try:
        yield
    finally:
        ray.shutdown()


def connect(address: str | None = None, num_cpus: int | None = None) -> None:
    """`ray.init` with the dashboard off and Ray's own logging quiet, so command output stays clean."""
    ray = _import_ray()
    address = address or os.environ.get("RAY_ADDRESS") or None
    quiet = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR}
    if address is None:
        # "local", not None: None would join a cluster left running by `ray start` on this machine.
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 1, **quiet)
        return
    _probe(address)
    try:
        ray.init(address=address, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ClusterUnavailable(f"cannot connect to the Ray cluster at {address}: {str(exc).splitlines()[0]}") from None


def _probe(address: str) -> None:
    """Raise ClusterUnavailable unless something listens at a HOST:PORT address."""
    host, sep, port = address.rpartition(":")
    if address.startswith("ray://") or address == "auto":
        return  # Ray client URLs and "auto" are Ray's own to resolve
    if not sep or not port.isdigit():
        raise ClusterUnavailable(f"--ray-address expects HOST:PORT (the head node's `ray start --head --port`), got {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=PROBE_TIMEOUT_S).close()
    except OSError as exc:
        raise ClusterUnavailable(
            f"cannot reach a Ray cluster at {address} ({exc.strerror or exc}); start one with `ray start --head --port={port}` "
            "on that machine, or leave out --ray-address to run a local Ray instance"
        ) from None


class RayExecutor:
    """Runs units on a Ray cluster (connecting, or starting a local instance, if needed).

    `workers` is how many units run at once at most (model stages: how many actors); by default
    as many as the stage's resource request fits on the cluster's nodes.
    """

    def __init__(self, workers: int | None = None, retries: int = RETRIES):
        self.workers = workers
        self.retries = retries

    def run(
        self,
        stage: Stage,
        units: Iterable[Unit],
        work_dir: Path,
        on_done: Callable[[str, dict], None] = lambda unit_id, stats: None,
    ) -> dict[str, str]:
        """Process every unit without a done marker; call `on_done` as each finishes. Returns the
        units whose `process` raised, with the error (they stay not done)."""
        from curate.executor import done_units
        from curate.storage import makedirs

        ray = _import_ray()
        if not ray.is_initialized():
            connect()
        makedirs(work_dir)
        done = done_units(work_dir)
        todo = [u for u in units if u.unit_id not in done]
        if not todo:
            return {}
        request = _request_for(ray, stage)
        capacity = _capacity(ray, request, stage.name)
        if stage.loads_model:
            pool = _Actors(ray, stage, request, min(self.workers or capacity, len(todo)), self.retries)
        else:  # a queue twice the cluster's width keeps every worker busy; --workers N means N at once
            pool = _Tasks(ray, stage, request, self.workers or 2 * capacity, self.retries)
        try:
            return _drive(ray, stage, todo, work_dir, pool, on_done)
        finally:
            pool.close()


def _drive(ray, stage: Stage, todo: list[Unit], work_dir: Path, pool, on_done) -> dict[str, str]:
    """Keep `pool` busy with the units, and account for each as its result arrives."""
    queue = list(reversed(todo))  # popped from the end: input order
    pending: dict = {}  # object ref -> unit
    errors: dict[str, str] = {}
    while queue or pending:
        while queue and pool.has_room(len(pending)):
            unit = queue.pop()
            pending[pool.submit(unit, str(work_dir))] = unit
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            unit = pending.pop(ref)
            pool.release(ref)
            outcome = _outcome(ray, ref, stage, unit, work_dir)
            if isinstance(outcome, str):
                errors[unit.unit_id] = outcome
            else:
                on_done(unit.unit_id, outcome)
    return errors


def _outcome(ray, ref, stage: Stage, unit: Unit, work_dir: Path) -> dict | str:
    """The unit's stats, or why it failed (a string: no marker, retried next run). A unit whose
    worker died on every attempt is recorded as failed by the stage, as LocalExecutor does."""
    from curate.executor import WORKER_DIED, is_done, save_unit

    errors = ray.exceptions
    try:
        return ray.get(ref)[1]
    except errors.RayTaskError as exc:  # `process` (or setup) raised: that unit alone fails
        cause = exc.cause if exc.cause is not None else exc
        return f"{type(cause).__name__}: {cause}"
    except (errors.WorkerCrashedError, errors.RayActorError, errors.OutOfMemoryError):
        if is_done(work_dir, unit.unit_id):  # it was saved just before its worker died
            return {}
        outputs, stats = stage.failed(unit, WORKER_DIED)
        save_unit(work_dir, unit.unit_id, outputs)
        return stats
    except errors.RayError as exc:  # the cluster lost it (a node, an object): not the unit's fault
        return f"{type(exc).__name__}: {str(exc).splitlines()[0]}"


def _request_for(ray, stage: Stage) -> Resources:
    """The stage's request, without GPUs on a cluster that has none (Ray would wait forever)."""
    request = stage.resources()
    if request.gpus and not ray.cluster_resources().get("GPU"):
        return Resources(cpus=request.cpus, gpus=0.0)
    return request


def _capacity(ray, request: Resources, name: str) -> int:
    """How many workers with `request` fit on the cluster's live nodes at once."""
    total = 0
    for node in ray.nodes():
        if node.get("Alive"):
            have = node.get("Resources", {})
            fits = [math.floor(have.get("CPU", 0) / request.cpus + 1e-9)]
            if request.gpus:
                fits.append(math.floor(have.get("GPU", 0) / request.gpus + 1e-9))
            total += min(fits)
    if total == 0:
        gpus = f" and {request.gpus:g} GPUs" if request.gpus else ""
        lower = f"{name}.ray_num_cpus" + (f" or {name}.ray_num_gpus" if request.gpus else "")
        raise ConfigError(f"no node of the Ray cluster has {request.cpus:g} CPUs{gpus} for one {name} worker (lower {lower})")
    return total


# -- inside the workers ------------------------------------------------------------------------

_task_stage_key: str | None = None  # which stage this task worker process has set up


def _run_task(stage: Stage, key: str, unit: Unit, work_dir: str) -> tuple[str, dict]:
    """A unit as a Ray task. Ray reuses worker processes across tasks (and across stages), so the
    stage is set up once per process and stage run, as in a local pool worker."""
    from curate.executor import run_unit, setup_worker
    from curate.storage import as_path

    global _task_stage_key
    if _task_stage_key != key:
        setup_worker(stage)
        _task_stage_key = key
    return run_unit(unit, as_path(work_dir))


class _StageActor:
    """A long-lived worker of a model stage: sets the stage up once, then takes units."""

    def __init__(self, stage: Stage):
        self.stage = stage
        self.ready = False

    def run(self, unit: Unit, work_dir: str) -> tuple[str, dict]:
        from curate.executor import run_unit, setup_worker
        from curate.storage import as_path

        # Set up on the first unit rather than in __init__: a crash while loading the model then
        # uses up that unit's retries, where a crashing __init__ would restart the actor forever.
        if not self.ready:
            setup_worker(self.stage)
            self.ready = True
        return run_unit(unit, as_path(work_dir))


# -- the driver's side of the two kinds of workers ----------------------------------------------


class _Tasks:
    """Units as Ray tasks: any worker with the requested resources takes the next one; a bounded
    number are submitted ahead, so progress is reported as they finish."""

    def __init__(self, ray, stage: Stage, request: Resources, in_flight: int, retries: int):
        self.ray = ray
        self.in_flight = max(1, in_flight)
        self.stage_ref = ray.put(stage)  # shipped once, not with every task
        self.key = uuid.uuid4().hex
        self.remote = ray.remote(_run_task).options(num_cpus=request.cpus, num_gpus=request.gpus, max_retries=retries)

    def has_room(self, pending: int) -> bool:
        return pending < self.in_flight

    def submit(self, unit: Unit, work_dir: str):
        return self.remote.remote(self.stage_ref, self.key, unit, work_dir)

    def release(self, ref) -> None:
        pass

    def close(self) -> None:
        pass


class _Actors:
    """Units on `count` actors, one unit at a time each: if an actor dies, only the unit it was
    running is affected (a queued unit would share the blame). Ray restarts a dead actor and
    retries its unit up to `retries` times."""

    def __init__(self, ray, stage: Stage, request: Resources, count: int, retries: int):
        self.ray = ray
        cls = ray.remote(_StageActor).options(num_cpus=request.cpus, num_gpus=request.gpus, max_restarts=-1, max_task_retries=retries)
        self.idle = [cls.remote(stage) for _ in range(max(1, count))]
        self.busy: dict = {}  # object ref -> actor

    def has_room(self, pending: int) -> bool:
        return bool(self.idle)

    def submit(self, unit: Unit, work_dir: str):
        actor = self.idle.pop()
        ref = actor.run.remote(unit, work_dir)
        self.busy[ref] = actor
        return ref

    def release(self, ref) -> None:
        self.idle.append(self.busy.pop(ref))

    def close(self) -> None:
        for actor in [*self.idle, *self.busy.values()]:
            self.ray.kill(actor)  # frees their CPUs/GPUs for the next stage
