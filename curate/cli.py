"""`python -m curate`: the command line. Each subcommand is a short function over the library.

User mistakes (a bad path, a bad config key) end with one `error:` line and exit code 2; every
input that is processed is accounted for in the manifests, and the exit code is then 0.
"""

from __future__ import annotations

import argparse
import sys

from curate.config import ConfigError, describe, load_config
from curate.inputs import InputError, collect_inputs

_INPUT_HELP = (
    "video files, directories (searched recursively), globs, or .txt/.csv/.parquet lists with a "
    "'path' column (an optional 'caption' column is kept as source_caption)"
)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default=".", help="output folder; manifests go to OUT/manifests (default: .)")
    parser.add_argument("--config", metavar="FILE", help="YAML config file (see `python -m curate config`)")
    parser.add_argument(
        "--set",
        dest="overrides",
        metavar="KEY=VALUE",
        nargs="+",
        action="extend",
        default=[],
        help="override config keys, e.g. --set split.max_clip_s=8 split.min_clip_s=3",
    )
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default: one per core)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m curate",
        description="Curate raw video into clean single-shot clips with parquet manifests.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    split = commands.add_parser(
        "split",
        help="find shot boundaries (cuts, dissolves, fades) and cut every video into clips",
        description=(
            "Decode each input once, detect hard cuts and gradual transitions, and write one row per "
            "input to OUT/manifests/videos.parquet and one row per clip to OUT/manifests/clips.parquet. "
            "Unreadable inputs become rows with status='error'. Interrupted runs resume where they "
            "stopped when the same command is run again."
        ),
    )
    split.add_argument("inputs", nargs="+", metavar="INPUT", help=_INPUT_HELP)
    _add_common(split)
    split.set_defaults(func=_split)

    status = commands.add_parser("status", help="summarise the manifests in an output folder")
    status.add_argument("--out", default=".", help="output folder (default: .)")
    status.set_defaults(func=_status)

    config = commands.add_parser("config", help="print the default config as YAML, one comment per key")
    config.add_argument("--config", metavar="FILE", help="show this file's values merged over the defaults")
    config.add_argument("--set", dest="overrides", metavar="KEY=VALUE", nargs="+", action="extend", default=[])
    config.set_defaults(func=_config)
    return parser


def _split(args: argparse.Namespace) -> int:
    from curate.manifest import OutputLayout
    from curate.runner import run_split, summarize

    config = load_config(args.config, args.overrides)
    if args.workers is not None and args.workers < 1:
        raise ConfigError("--workers must be at least 1")
    inputs = collect_inputs(args.inputs)
    if not inputs:
        raise InputError("no video files found in the given inputs")
    layout = OutputLayout(args.out)
    stats = run_split(inputs, layout, config, args.workers, progress=not args.quiet)
    done = stats.units - stats.skipped
    speed = f", {stats.frames / stats.seconds:.0f} frames/s" if stats.frames and stats.seconds else ""
    print(f"split: {done} videos processed, {stats.skipped} already done, {stats.seconds:.1f} s{speed}")
    print(summarize(layout))
    return _report_failures(stats.failed, inputs)


def _report_failures(failed: dict[str, str], inputs) -> int:
    """Exit 1, naming them, when units failed inside the program (they are retried next run)."""
    if not failed:
        return 0
    paths = {v.video_id: v.path for v in inputs}
    print(f"error: {len(failed)} inputs failed inside vidcurate and are not in the manifests yet; "
          "run the same command again to retry them:", file=sys.stderr)
    for unit_id, message in list(failed.items())[:10]:
        print(f"  {paths.get(unit_id, unit_id)}: {message}", file=sys.stderr)
    return 1


def _status(args: argparse.Namespace) -> int:
    from curate.manifest import OutputLayout
    from curate.runner import summarize

    layout = OutputLayout(args.out)
    if not layout.videos.exists():
        raise InputError(f"no manifests in {layout.manifests}/ (run `python -m curate split INPUT... --out {args.out}` first)")
    print(summarize(layout))
    return 0


def _config(args: argparse.Namespace) -> int:
    print(describe(load_config(args.config, args.overrides)), end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (InputError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130
