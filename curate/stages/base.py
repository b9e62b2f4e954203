"""What every stage is: config in, `setup()` once per worker, `process(unit)` per unit.

A stage turns one unit (a video for split; the clips of one video for clip stages) into output
tables (`{"videos": rows, "clips": rows}` as pyarrow tables) plus a small stats dict for the
progress bar and the summary. Per-row problems are data (an error or drop_reason value), never an
exception; an exception out of `process` is an infrastructure failure, and the unit is retried on
the next run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from curate.pipeline import BY_NAME, EXECUTOR


@dataclass(frozen=True)
class Unit:
    """One piece of work: a file-name-safe id, and whatever the stage needs to do it."""

    unit_id: str
    payload: Any


@dataclass(frozen=True)
class Resources:
    """What one worker of a stage asks a cluster scheduler for (the Ray executor)."""

    cpus: float = 1.0
    gpus: float = 0.0  # asked for only where the cluster has GPUs


class Stage:
    """Base class; subclasses set `name` and implement `process` and `failed`."""

    name = "stage"
    default_workers: int | None = None  # None: one worker process per core
    extra_tables: tuple[str, ...] = ()  # per-unit tables published as manifests/<name>/ (embeddings)

    @property
    def loads_model(self) -> bool:
        """True: setup() is costly, so a cluster keeps long-lived workers (Ray actors). From the
        stage's row in `curate.pipeline` (a stage outside the table may set it as an attribute)."""
        spec = BY_NAME.get(self.name)
        return spec is not None and spec.loads_model

    @property
    def preload(self) -> tuple[str, ...]:
        """What the fork server imports before forking this stage's workers: its row's
        `StageSpec.preload`, or the executor and the stage's own module (a stage outside the table)."""
        spec = BY_NAME.get(self.name)
        return spec.preload if spec is not None else (EXECUTOR, type(self).__module__)

    def resources(self) -> Resources:
        """The request of one worker: the stage config's `ray_num_cpus` / `ray_num_gpus`, when it has them."""
        config = getattr(self, "config", None)
        return Resources(cpus=getattr(config, "ray_num_cpus", 1.0), gpus=getattr(config, "ray_num_gpus", 0.0))

    def gpu_ids(self) -> list[str]:
        """The GPUs the local executor hands out to this stage's workers, one each; none here."""
        return []

    def prepare(self) -> None:
        """Run once in the main process before any worker starts: find or download model
        weights, so a model that cannot be had fails once, with one clear line."""

    def setup(self) -> None:
        """Load what the stage needs once per worker process (models, lookup tables)."""

    def process(self, unit: Unit) -> tuple[dict, dict]:
        """Return (output tables by name, stats) for one unit."""
        raise NotImplementedError

    def failed(self, unit: Unit, message: str) -> tuple[dict, dict]:
        """The outputs that record a unit which cannot be processed at all (it crashed workers)."""
        raise NotImplementedError
