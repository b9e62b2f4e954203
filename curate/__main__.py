"""Entry point for `python -m curate`."""

from curate.cli import main

raise SystemExit(main())
