"""Where local pool workers come from: a fork server, started once per command.

Workers are not forked from the command's own process: it may run threads (FFmpeg's, torch's,
a progress bar's), and a fork copies their locks in whatever state they are in. The fork server
is a fresh process that does nothing but import the executor, the stage's module and pandas (no
decoding, no model, no progress bar). Each worker is a fork of it and starts with those imports
done, instead of paying about 0.6 CPU-s to import them anew as a spawned worker would. Where no
fork server exists (Windows), workers are spawned.

This module imports nothing heavy, so a command can start the server first thing (`start`) and
let it import while the command's own process does.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
from multiprocessing import forkserver


def available() -> bool:
    return "forkserver" in multiprocessing.get_all_start_methods()


def context(stage_module: str) -> multiprocessing.context.BaseContext:
    """The multiprocessing context for a pool running a stage defined in `stage_module`."""
    if not available():
        return multiprocessing.get_context("spawn")
    server = multiprocessing.get_context("forkserver")
    # pandas: pyarrow imports it the first time a worker builds an array (to check whether the
    # values are a pandas object). The list takes effect when the server starts (the first pool
    # of this process); workers of later stages import what it lacks themselves.
    server.set_forkserver_preload(["curate._forkserver_boot", "curate.executor", stage_module, "pandas"])
    return server


def start(stage_module: str) -> None:
    """Start the server now (if it is not running yet), so that it imports while the caller
    goes on with its own imports."""
    if available():
        context(stage_module)
        forkserver.ensure_running()
