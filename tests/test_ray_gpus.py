"""`--executor ray` with GPUs: each actor of a model stage keeps the GPU Ray assigned it.

Ray, not our executor, chooses an actor's GPU and sets its CUDA_VISIBLE_DEVICES; the worker setup
must leave that alone. A local Ray instance declares two GPUs this machine does not have: Ray
assigns and announces them all the same, which is all this test needs.
"""

from __future__ import annotations

import logging
import os
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate.executor import part_path
from curate.stages.base import Resources, Stage, Unit

ray = pytest.importorskip("ray")
from curate.ray_executor import RayExecutor  # noqa: E402  (after the skip: it needs ray)

pytestmark = pytest.mark.ray

SCHEMA = pa.schema([("unit", pa.string()), ("pid", pa.int64()), ("visible", pa.string()), ("ray_gpus", pa.string())])


@pytest.fixture(scope="module")
def gpu_cluster():
    """A local Ray instance with 2 CPUs and 2 faked GPUs for the module (quiet, as `connect` starts one)."""
    ray.init(address="local", num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    # Ray workers cannot import this test module by name: ship its stage class by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    ray.shutdown()


class _GpuModelStage(Stage):
    """A model stage asking for one GPU per worker; records, at setup (after the executor's worker
    setup ran), the CUDA_VISIBLE_DEVICES its actor has and the GPUs Ray says it assigned."""

    name = "gpu-model"
    loads_model = True

    def resources(self) -> Resources:
        return Resources(cpus=1.0, gpus=1.0)

    def setup(self):
        self.visible = os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>")
        self.ray_gpus = ",".join(str(gpu) for gpu in ray.get_gpu_ids())

    def process(self, unit: Unit):
        row = {"unit": [unit.unit_id], "pid": [os.getpid()], "visible": [self.visible], "ray_gpus": [self.ray_gpus]}
        return {"rows": pa.table(row, schema=SCHEMA)}, {}

    def failed(self, unit: Unit, message: str):
        return {"rows": pa.table({"unit": [unit.unit_id], "pid": [0], "visible": [message], "ray_gpus": [""]}, schema=SCHEMA)}, {}


def test_each_actor_keeps_the_gpu_ray_assigned_it(gpu_cluster, tmp_path):
    units = [Unit(f"u{i}", None) for i in range(6)]
    errors = RayExecutor(workers=2).run(_GpuModelStage(), units, tmp_path)
    assert errors == {}

    rows = [pq.read_table(part_path(tmp_path, u.unit_id, "rows")).to_pylist()[0] for u in units]
    by_actor = {row["pid"]: (row["visible"], row["ray_gpus"]) for row in rows}
    assert len(by_actor) == 2  # the first two units went to the two actors
    for visible, ray_gpus in by_actor.values():
        assert visible == ray_gpus and len(visible.split(",")) == 1  # Ray's one GPU, left as Ray set it
    assert len({visible for visible, _ in by_actor.values()}) == 2  # distinct GPUs
