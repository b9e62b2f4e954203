"""One GPU per local worker of a model stage (`curate.devices`), checked without a GPU: the device
ids are faked through CUDA_VISIBLE_DEVICES, which is all a worker's choice of GPU rests on."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from curate.config import load_config
from curate.devices import VISIBLE, WorkerDevices, device_for, parse_visible, visible_ids
from curate.executor import LocalExecutor, part_path
from curate.runner import make_executor
from curate.stages.aesthetic import AestheticStage
from curate.stages.base import Stage, Unit
from curate.stages.caption.stage import CaptionStage

REPO = Path(__file__).resolve().parent.parent
UUIDS = "GPU-8f2ac1d4-5b6e-4c2a-9d1e-0a1b2c3d4e5f,GPU-11c3e9a0-7f21-4b8d-8e0f-ffeeddccbbaa"


# -- which ids are visible, which one a worker gets ------------------------------------------------


def test_parse_visible_keeps_ids_as_written():
    assert parse_visible(None) is None  # unset: every device
    assert parse_visible("") == []  # set but empty: none
    assert parse_visible("2,5") == ["2", "5"]
    assert parse_visible(" 2 , 5 ,") == ["2", "5"]
    assert parse_visible(UUIDS) == UUIDS.split(",")
    assert parse_visible("MIG-4b0e2bde-6fd1-5d4a-a2a8-bc1e6bb4c8a2") == ["MIG-4b0e2bde-6fd1-5d4a-a2a8-bc1e6bb4c8a2"]


def test_visible_ids_are_the_parents_physical_ids():
    assert visible_ids(3, {}) == ["0", "1", "2"]
    assert visible_ids(0, {}) == []
    assert visible_ids(2, {VISIBLE: "2,5"}) == ["2", "5"]
    assert visible_ids(2, {VISIBLE: "2,5,9"}) == ["2", "5"]  # CUDA stopped at an id it cannot use
    assert visible_ids(0, {VISIBLE: ""}) == []
    assert visible_ids(2, {VISIBLE: UUIDS}) == UUIDS.split(",")


def test_workers_beyond_the_gpus_share_them_round_robin():
    assert [device_for(["3", "7"], worker) for worker in range(5)] == ["3", "7", "3", "7", "3"]
    devices = WorkerDevices(["3", "7"], multiprocessing.get_context("spawn"))
    assert [devices.claim() for _ in range(3)] == ["3", "7", "3"]
    with pytest.raises(ValueError):
        WorkerDevices([], multiprocessing.get_context("spawn"))


# -- real local pools ---------------------------------------------------------------------------

SCHEMA = pa.schema([("unit", pa.string()), ("pid", pa.int64()), ("visible", pa.string())])


class _DeviceEchoStage(Stage):
    """Records the CUDA_VISIBLE_DEVICES its worker had when set up, in a file per worker and in its
    rows. Each worker's setup waits until `workers` workers have started: no worker finishes a unit
    before then, so the pool starts every one of them."""

    name = "device-echo"
    loads_model = True

    def __init__(self, started: Path, workers: int):
        self.started = started
        self.workers = workers
        self.visible = "<not set up>"

    def setup(self):
        self.visible = os.environ.get(VISIBLE, "<unset>")
        (self.started / str(os.getpid())).write_text(self.visible)
        deadline = time.monotonic() + 60
        while len(list(self.started.iterdir())) < self.workers:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(list(self.started.iterdir()))} of {self.workers} workers started")
            time.sleep(0.01)

    def process(self, unit: Unit):
        row = {"unit": [unit.unit_id], "pid": [os.getpid()], "visible": [self.visible]}
        return {"rows": pa.table(row, schema=SCHEMA)}, {}

    def failed(self, unit: Unit, message: str):
        return {"rows": pa.table({"unit": [unit.unit_id], "pid": [0], "visible": [message]}, schema=SCHEMA)}, {}


def _run_echo(tmp_path: Path, workers: int, gpu_ids: list[str] | None) -> tuple[dict[int, str], dict[int, set[str]]]:
    """Run 4 units per worker; returns each started worker's CUDA_VISIBLE_DEVICES (by pid) and
    the values each pid wrote into its rows."""
    started, work = tmp_path / "started", tmp_path / "work"
    started.mkdir()
    units = [Unit(f"u{i}", None) for i in range(4 * workers)]
    errors = LocalExecutor(workers, gpu_ids).run(_DeviceEchoStage(started, workers), units, work)
    assert errors == {}
    at_setup = {int(path.name): path.read_text() for path in started.iterdir()}
    in_rows: dict[int, set[str]] = {}
    for unit in units:
        row = pq.read_table(part_path(work, unit.unit_id, "rows")).to_pylist()[0]
        in_rows.setdefault(row["pid"], set()).add(row["visible"])
    return at_setup, in_rows


@pytest.mark.parametrize(("workers", "expected"), [(2, ["3", "7"]), (3, ["3", "3", "7"])], ids=["one-each", "round-robin"])
def test_each_local_worker_sees_one_gpu_of_the_parents(tmp_path, monkeypatch, workers, expected):
    monkeypatch.setenv(VISIBLE, "3,7")
    gpu_ids = visible_ids(2)
    assert gpu_ids == ["3", "7"]
    at_setup, in_rows = _run_echo(tmp_path, workers, gpu_ids)

    assert len(at_setup) == workers
    assert sorted(at_setup.values()) == expected  # one id each, from the list, spread round-robin
    assert all(values == {at_setup[pid]} for pid, values in in_rows.items())  # the same id when processing
    if workers == len(gpu_ids):
        assert len(set(at_setup.values())) == workers  # no two workers share a GPU


def test_a_pool_without_gpu_ids_leaves_cuda_visible_devices_alone(tmp_path, monkeypatch):
    """cpu and cuda:N stages (no gpu_ids): every worker keeps the parent's whole list."""
    monkeypatch.setenv(VISIBLE, "3,7")
    at_setup, _ = _run_echo(tmp_path, 2, None)
    assert sorted(at_setup.values()) == ["3,7", "3,7"]


# -- the model stages' side ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", [AestheticStage, CaptionStage])
def test_model_stages_hand_out_every_visible_gpu_only_for_auto_and_cuda(monkeypatch, kind):
    config = load_config()
    section = config.aesthetic if kind is AestheticStage else config.caption
    monkeypatch.setenv(VISIBLE, UUIDS)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)  # two faked GPUs; their ids come from the environment
    for device, ids in (("auto", UUIDS.split(",")), ("cuda", UUIDS.split(",")), ("cuda:1", []), ("cpu", [])):
        stage = kind(dataclasses.replace(section, device=device))
        assert stage.gpu_ids() == ids
        assert stage.default_workers == max(1, len(ids))
        pool = make_executor("local", None, stage)
        assert (pool.workers, pool.gpu_ids) == (max(1, len(ids)), ids)
    pool = make_executor("local", 4, kind(section))  # --workers 4 on 2 GPUs: two workers on each
    assert (pool.workers, pool.gpu_ids) == (4, UUIDS.split(","))


def test_without_a_gpu_a_model_stage_runs_one_worker_and_hands_out_no_ids():
    if torch.cuda.device_count():
        pytest.skip("this machine has a GPU")
    stage = AestheticStage(load_config().aesthetic)
    assert stage.gpu_ids() == [] and stage.default_workers == 1
    assert make_executor("local", None, stage).gpu_ids == []


# -- nothing initialises CUDA before a worker picks its GPU --------------------------------------

_WATCH_CUDA = r"""
import json, sys
import torch.cuda

WATCHED = {"is_available", "device_count", "init", "_lazy_init", "current_device", "set_device", "is_bf16_supported",
           "get_device_name", "get_device_properties", "synchronize", "mem_get_info",
           "_cuda_getDeviceCount", "_cuda_init", "_cuda_setDevice", "_cuda_getDevice"}
calls = []

def profile(frame, event, arg):
    if event == "call" and frame.f_code.co_name in WATCHED and frame.f_code.co_filename == torch.cuda.__file__:
        calls.append(frame.f_code.co_name)
    elif event == "c_call" and getattr(arg, "__name__", "") in WATCHED:
        calls.append(arg.__name__)

sys.setprofile(profile)
for module in sys.argv[1:]:
    __import__(module)
sys.setprofile(None)
imported = list(calls)
sys.setprofile(profile)
torch.cuda.is_available()  # the control: the watch must see this one
sys.setprofile(None)
print(json.dumps({"imports": imported, "control": calls[len(imported):]}), flush=True)
"""


@pytest.mark.parametrize("stage", ["aesthetic", "caption"])
def test_the_fork_servers_imports_leave_cuda_uninitialised(stage):
    """Workers are forks of the fork server, which imports the executor and the stage's module
    (and with it torch), and what only its workers need. Had any of that initialised CUDA, a worker
    could no longer choose its GPU (and CUDA refuses to work in a fork of a process that initialised it)."""
    from curate.forkserver import preload as server_preload
    from curate.pipeline import stage_spec

    preload = server_preload(stage_spec(stage).preload)  # what curate.forkserver.context gives the server
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", _WATCH_CUDA, *preload], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0 and result.stdout, result.stderr  # (the fork server's atexit exits 0 whatever happened)
    seen = json.loads(result.stdout)
    assert seen["imports"] == []
    assert "is_available" in seen["control"]
