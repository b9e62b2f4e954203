"""Entry point for `python -m curate` and the `curate` command."""

import os
import sys
from typing import NoReturn


def main() -> NoReturn:
    """Run the command line, starting the fork server of a split first (see below)."""
    # numpy's OpenBLAS starts its threads as numpy loads, and each then spins for about 0.1 CPU-s
    # before it sleeps, taking a core from the imports that run meanwhile. Sleeping at once keeps
    # them for the large products they speed up (dedup's similarities); a user's own setting wins.
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
    if _begins_with_local_split(sys.argv[1:]):
        # The split workers' fork server spends about 0.3 s importing PyAV, numpy, OpenCV and
        # pyarrow before the first frame decodes. Started before this process imports the command
        # line (0.1 s), its imports overlap with all of this process's own. A wrong guess costs
        # little: a local split it misses starts the server later, as the pool is made; a Ray run
        # it takes for a local one (`--exec ray`) leaves an idle server, which ends with the command.
        from curate import forkserver
        from curate.pipeline import stage_spec

        forkserver.start(stage_spec("split").preload)
    from curate.cli import run

    run()


def _begins_with_local_split(args: list[str]) -> bool:
    """Whether these arguments begin with a split on local workers (`split`, or `run`, whose
    first stage it is; later stages' workers fork from the same server): not Ray, not help."""
    if args[:1] not in (["split"], ["run"]) or {"-h", "--help"} & set(args):
        return False
    return not any(a == "--executor=ray" or (a == "--executor" and b == "ray") for a, b in zip(args, [*args[1:], ""], strict=True))


if __name__ == "__main__":
    main()
