"""Imported first by the fork server that workers start from (`curate.forkserver`: local pool
workers, the trainer's DataLoader workers), and by nothing else.

The server holds no data of its own. When the command that started it ends, it would still tear
down its interpreter, freeing every module it preloaded (about 0.3 s with pandas, pyarrow and
PyAV), and keep the command's stdout and stderr open meanwhile, so a caller reading them waits.
Leaving at once instead costs nothing. Workers forked from the server never run it: a forked
child always ends with os._exit.

The server dies with the command's process, and each worker with the server (`die_with_parent`):
the worker asks right after its fork, before it reads its first task, so there is no moment
in which the server's death would leave it waiting on its task pipe for good.
"""

import atexit
import os

from curate.forkserver import PARENT_ENV, die_with_parent

atexit.register(os._exit, 0)

_server_pid = os.getpid()
_parent = os.environ.pop(PARENT_ENV, "")
if _parent:  # empty: started off the command's main thread (see curate.forkserver)
    die_with_parent(int(_parent))


def _after_fork() -> None:
    """In each process forked from the server, once: a worker, never a process a worker forks."""
    global _server_pid
    if _server_pid is not None and os.getpid() != _server_pid:
        parent, _server_pid = _server_pid, None
        die_with_parent(parent)


os.register_at_fork(after_in_child=_after_fork)
