"""Imported first by the fork server that local pool workers start from (`curate.forkserver`),
and by nothing else.

The server holds no data of its own. When the command that started it ends, it would still tear
down its interpreter, freeing every module it preloaded (about 0.3 s with pandas, pyarrow and
PyAV), and keep the command's stdout and stderr open meanwhile, so a caller reading them waits.
Leaving at once instead costs nothing. Workers forked from the server never run it: a forked
child always ends with os._exit.
"""

import atexit
import os

atexit.register(os._exit, 0)
