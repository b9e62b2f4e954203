"""What a command prints to, and what it does when that is gone.

A command piped into `head -1` loses its stdout once `head` has its line. Python then raises
BrokenPipeError at the next write. Both command lines (`curate`, `train`) end quietly instead,
with the shell's status for it, while what the command did is already saved.
"""

from __future__ import annotations

import os
import sys

# The shell's exit status for a command ended by a closed pipe (128 + SIGPIPE), as `head` leaves
# programs that do not catch it: the output was cut short. Failures (1, 2) still take precedence.
CLOSED_STDOUT = 128 + 13
_stdout_lost = False  # set once stdout has been pointed at the null device


def _stdout_closed() -> bool:
    """Whether nothing reads stdout any more: a pipe whose reader left (`| head -1` once it has
    its line). Python raises BrokenPipeError on writing to it."""
    import select

    try:
        poll = select.poll()
        poll.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poll.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll (Windows), no stdout
        return False


def drop_closed_stdout() -> int:
    """Called while a BrokenPipeError is handled: when stdout is what closed, point it at the null
    device, so that what is still buffered, flushed at exit, goes nowhere instead of raising again,
    and return CLOSED_STDOUT; otherwise (a connection broke, not our output: a real failure)
    raise the error again. The work itself is done and saved by then: a closed stdout stops a
    command only at its summary (`run` goes on, see `say`)."""
    global _stdout_lost
    if not _stdout_closed():
        raise  # noqa: PLE0704 (re-raises the BrokenPipeError being handled)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    _stdout_lost = True
    return CLOSED_STDOUT


def say(text: str) -> None:
    """Print a line that more work follows (`run` between stages): a closed stdout must not stop
    that work, so it only sends the rest of the output to the null device."""
    try:
        print(text)
    except BrokenPipeError:
        drop_closed_stdout()


def stdout_lost() -> bool:
    """Whether stdout was found closed and pointed at the null device."""
    return _stdout_lost
