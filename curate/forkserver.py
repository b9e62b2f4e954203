"""Where worker processes come from: a fork server, started once per command. Local pool
workers come from it, and so do the trainer's DataLoader workers (`train.data`).

Workers are not forked from the command's own process: it may run threads (FFmpeg's, torch's,
CUDA's, a progress bar's), and a fork copies their locks in whatever state they are in. The fork
server is a fresh process that does nothing but import what the workers need (for a stage, the
executor, the stage's module and what only its workers need: `StageSpec.preload`; no decoding,
no model, no progress bar). Each worker is a fork of it and starts with those imports done,
instead of paying about 0.6 CPU-s (2 for the trainer's loader, which imports torch) to import
them anew as a spawned worker would. Where no fork server exists (Windows), workers are spawned.

The server and its workers die with the command: on Linux each asks the kernel for SIGKILL when
its parent dies (`die_with_parent`), the server when the command's process does, a worker when
the server does. Without that, a SIGKILLed command left them behind for good: a worker waits on
its task pipe, whose write end it holds itself, the server waits for its workers, and both keep
the command's stdout open, so whatever reads it never sees the end.

The kernel sends that signal when the *thread* that started the process ends, not the process.
The server is therefore started here on the command's main thread (`start`, or `context` as a
pool is made), which lives as long as the command; started from another thread, it is left
without the signal rather than killed when that thread ends. The server forks workers on its
only thread.

This module imports nothing heavy, so a command can start the server first thing (`start`) and
let it import while the command's own process does.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import os
import signal
import sys
import threading
from collections.abc import Sequence
from multiprocessing import forkserver

# How the server learns which process must be its parent (read by curate._forkserver_boot).
PARENT_ENV = "VIDCURATE_FORKSERVER_PARENT"
# numpy's OpenBLAS threads in the server, and so in every worker forked from it: one. Workers run one
# per core, so more threads would only crowd the cores the other workers need; and OpenBLAS starts
# them as numpy loads, where each spins for about 0.1 CPU-s before it sleeps, while the server's
# imports are what the first frame waits for. (OpenBLAS reads it once, at load.)
_BLAS_THREADS = "OPENBLAS_NUM_THREADS"
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def available() -> bool:
    return "forkserver" in multiprocessing.get_all_start_methods()


def context(modules: Sequence[str]) -> multiprocessing.context.BaseContext:
    """The multiprocessing context for workers, with its fork server running, `modules` imported
    there (a stage's `StageSpec.preload`, or the trainer's loader module)."""
    if not available():
        return multiprocessing.get_context("spawn")
    server = multiprocessing.get_context("forkserver")
    # No pandas: split's workers build their tables without it (`curate.arrow`). The list takes
    # effect when the server starts (the first pool or loader of this process); later workers
    # import what it lacks themselves.
    server.set_forkserver_preload(preload(modules))
    _ensure_running()
    return server


def preload(modules: Sequence[str]) -> list[str]:
    """What the server imports before it forks any worker: its own start-up module, then `modules`."""
    return ["curate._forkserver_boot", *modules]


def start(modules: Sequence[str]) -> None:
    """Start the server now (if it is not running yet), so that it imports `modules` while the
    caller goes on with its own imports."""
    if available():
        context(modules)


def _ensure_running() -> None:
    """Start the server if it is not running, telling it whether to die with this process: only
    when this is the main thread (see the module docstring). An empty value means no."""
    added = {PARENT_ENV: str(os.getpid()) if threading.current_thread() is threading.main_thread() else ""}
    if _BLAS_THREADS not in os.environ:  # a user's own setting wins
        added[_BLAS_THREADS] = "1"
    os.environ.update(added)
    try:
        forkserver.ensure_running()
    finally:
        for name in added:  # for the server only: workers and their children never see them
            del os.environ[name]


def die_with_parent(parent_pid: int) -> None:
    """Have the kernel SIGKILL this process as soon as its parent `parent_pid` ends (Linux
    prctl PR_SET_PDEATHSIG); if that parent is gone already, exit now, since no signal would
    come. Does nothing where prctl does not exist."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # libc, already loaded into this process
    except (OSError, AttributeError):
        return
    if prctl(_PR_SET_PDEATHSIG, ctypes.c_ulong(signal.SIGKILL), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)) != 0:
        return
    # The parent may have died between the fork and the request: we were then handed to another
    # process (init, a subreaper) already, and the signal will never come.
    if os.getppid() != parent_pid:
        os._exit(1)
