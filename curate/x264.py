"""libx264 settings that make its output the same bytes on every run on a machine.

x264's AVX-512 code reads memory it never wrote, so with AVX-512 the same frames and settings
can give other bytes from run to run; with any other instruction set they do not. x264 can be
told which sets to use, not which to avoid, so `x264_params` asks the libx264 that FFmpeg loaded
(Linux) which sets it detects and passes them on without AVX-512. Pack's encoder and the
synthetic videos of the demo and tests both encode through it.
"""

from __future__ import annotations

import ctypes
import functools

_X264_AVX512 = 1 << 16  # X264_CPU_AVX512 in x264.h


@functools.cache
def x264_params() -> str:
    """The `x264-params` value for byte-identical output: the instruction sets x264 detects on
    this CPU, less AVX-512 ("" where x264 detects no AVX-512, or its library cannot be found)."""
    library = _loaded_library("libx264")
    if library is None:
        return ""
    try:
        detect = ctypes.CDLL(library).x264_cpu_detect
    except (OSError, AttributeError):
        return ""
    detect.restype = ctypes.c_uint32
    flags = detect()
    return f"asm={flags & ~_X264_AVX512}" if flags & _X264_AVX512 else ""


def repeatable(options: dict[str, str]) -> dict[str, str]:
    """libx264 encoder `options` with `x264-params` added where x264 needs it to repeat itself."""
    if x264_params() and "x264-params" not in options:
        return {**options, "x264-params": x264_params()}
    return dict(options)


def _loaded_library(name: str) -> str | None:
    """The file of a shared library this process has loaded, from /proc/self/maps (Linux)."""
    try:
        with open("/proc/self/maps") as maps:
            return next((line.split()[-1] for line in maps if f"/{name}" in line), None)
    except OSError:
        return None
