"""Entry point for `python -m curate`."""

from curate.cli import run

run()
