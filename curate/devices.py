"""Which GPU each local worker of a model stage runs on.

A model stage starts one local worker per visible GPU (`ModelClipStage.default_workers`). Left
alone, every worker would resolve `auto` or `cuda` to the first GPU and load its model there. So
the pool numbers its workers as they start (`WorkerDevices`), and each worker sets
CUDA_VISIBLE_DEVICES to its own GPU before anything in it initialises CUDA: CUDA reads the variable
once, when it initialises, and from then on the worker sees that GPU alone, as `cuda:0`.

Ids are kept as this process's CUDA_VISIBLE_DEVICES spells them (ordinals, or GPU-/MIG- UUIDs,
passed on untouched): a command started with CUDA_VISIBLE_DEVICES=2,5 gives its workers 2 and 5.
With more workers than GPUs (`--workers 4` on 2 GPUs), workers share them round-robin.

This module imports no torch: the caller counts the devices (`torch.cuda.device_count()`), and a
worker must choose its GPU before torch touches CUDA.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

VISIBLE = "CUDA_VISIBLE_DEVICES"


def parse_visible(value: str | None) -> list[str] | None:
    """The device ids a CUDA_VISIBLE_DEVICES value lists, in order (None: the variable is unset,
    so every device is visible; an empty value hides them all)."""
    if value is None:
        return None
    return [part.strip() for part in value.split(",") if part.strip()]


def visible_ids(count: int, environ: Mapping[str, str] = os.environ) -> list[str]:
    """The ids of the `count` devices this process sees, as `environ`'s CUDA_VISIBLE_DEVICES names
    them (0 .. count-1 when it is unset). CUDA stops at the first id it cannot use, so only the
    first `count` listed ones are real."""
    listed = parse_visible(environ.get(VISIBLE))
    if listed is None:
        return [str(index) for index in range(count)]
    return listed[: max(0, count)]


def device_for(ids: Sequence[str], worker: int) -> str:
    """The id the `worker`-th worker (from 0) of a pool gets: round-robin over `ids`."""
    return ids[worker % len(ids)]


class WorkerDevices:
    """Hands out one of `ids` to each worker process of one pool, round-robin in the order the
    workers start. Made in the parent with the pool's multiprocessing context and passed to the
    workers' initializer; a new pool needs a new one (its count starts again at 0)."""

    def __init__(self, ids: Sequence[str], context):
        if not ids:
            raise ValueError("WorkerDevices needs at least one device id")
        self.ids = list(ids)
        # A shared counter rather than a queue of ids: taking a number never blocks, however
        # many processes the pool starts.
        self._started = context.Value("i", 0)

    def claim(self) -> str:
        """In a worker: the next id (each call takes a new one)."""
        with self._started.get_lock():
            worker = self._started.value
            self._started.value += 1
        return device_for(self.ids, worker)

    def pin(self) -> str:
        """In a worker, before torch initialises CUDA: see only the claimed device. Returns it."""
        device = self.claim()
        os.environ[VISIBLE] = device
        return device
