"""Small helpers the benchmark scripts share: what machine this is, and waiting for it to be idle."""

from __future__ import annotations

import os
import time


def cpu_model() -> str:
    """The CPU's model name, as /proc/cpuinfo gives it (or "unknown")."""
    try:
        with open("/proc/cpuinfo") as info:
            return next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown"


def wait_for_idle(max_wait: float) -> None:
    """Wait (at most max_wait s) until the 1-minute load average drops under half a core."""
    deadline = time.monotonic() + max_wait
    while time.monotonic() < deadline and os.getloadavg()[0] > 0.5:
        time.sleep(5)
