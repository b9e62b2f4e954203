"""`python -m curate`: the command line. Each subcommand is a short function over the library.

User mistakes (a bad path, a bad config key, a model that cannot be loaded) end with one `error:`
line and exit code 2; every input that is processed is accounted for in the manifests, and the
exit code is then 0.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import sys
import threading
from typing import NoReturn

from curate.config import Config, describe, load_config
from curate.console import CLOSED_STDOUT, drop_closed_stdout, say, stdout_lost
from curate.errors import ConfigError, InputError, UserError
from curate.inputs import collect_inputs
from curate.pipeline import BY_NAME, CLIP_STAGES, STAGES, StageSpec, stage_spec
from curate.storage import check_reachable

_INPUT_HELP = (
    "video files, directories (searched recursively), globs, or .txt/.csv/.parquet lists with a "
    "'path' column (an optional 'caption' column is kept as source_caption); local paths or "
    "object-store URLs such as s3://bucket/videos/ (a prefix counts as a directory)"
)
_OUT_HELP = "output folder, local or an object-store URL such as s3://bucket/work; manifests go to OUT/manifests (default: .)"


_NAMES = ", ".join(BY_NAME)
_NAMES_WITHOUT_MODELS = ", ".join(spec.name for spec in STAGES if not spec.loads_model)

_THRESHOLDS_NOTE = (
    "Thresholds (motion.min, aesthetic.min, ...) set with --set or --config are remembered in "
    "OUT/manifests/config.yaml and apply to later commands on the same folder."
)


def _add_settings(parser: argparse.ArgumentParser, example: str) -> None:
    parser.add_argument("--out", default=".", help=_OUT_HELP)
    parser.add_argument("--config", metavar="FILE", help="YAML config file (see `python -m curate config`)")
    parser.add_argument(
        "--set",
        dest="overrides",
        metavar="KEY=VALUE",
        nargs="+",
        action="extend",
        default=[],
        help=f"override config keys, e.g. --set {example}",
    )


def _add_common(parser: argparse.ArgumentParser, example: str = "split.max_clip_s=8 split.min_clip_s=3") -> None:
    _add_settings(parser, example)
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes (default: one per core; model stages: one per GPU, each on its own, or 1 on the CPU)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--executor",
        choices=["local", "ray"],
        default="local",
        help="local: a process pool on this machine (default); ray: Ray tasks, and actors for model stages, with the "
        "CPU/GPU requests of the ray_num_cpus/ray_num_gpus settings (--workers: at most that many at once)",
    )
    parser.add_argument(
        "--ray-address",
        metavar="HOST:PORT",
        help="with --executor ray: the head node of a running cluster (`ray start --head --port=6379`); every node "
        "must reach the inputs and OUT (an object store, or a shared file system). Default: RAY_ADDRESS, else a "
        "local Ray instance for the command's length",
    )


def _add_stage(commands, spec: StageSpec) -> None:
    """The command of one stage, from its row in `curate.pipeline`."""
    parser = commands.add_parser(spec.name, help=spec.help, description=f"{spec.description} {_THRESHOLDS_NOTE}")
    if spec.units is None:  # split: the stage that reads the inputs
        parser.add_argument("inputs", nargs="+", metavar="INPUT", help=_INPUT_HELP)
        _add_replace(parser)
    _add_common(parser, spec.example)
    if spec.loads_model:
        _add_models(parser)
    if spec.name == "dedup":
        _add_against(parser)
    parser.set_defaults(func=_split if spec.units is None else _clip_stage, stage=spec.name)


def _add_replace(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--replace",
        action="store_true",
        help="the manifests list only these inputs; without it, the videos earlier runs put in OUT stay (a run on new videos adds them)",
    )


def _add_against(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--against",
        metavar="OTHER_OUT",
        action="append",
        default=[],
        help="dedup: also against the kept clips of this curated output folder, which rank above these (repeatable; dedup.against)",
    )


def _add_models(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--models",
        choices=["default", "tiny"],
        default="default",
        help="default: the real models of the config; tiny: small random models built offline (tests, demo)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m curate",
        description=(
            f"Curate raw video into clean single-shot clips, stage by stage ({', '.join(BY_NAME)}), and filter them on the scores. "
            "Every stage reads and writes parquet manifests under OUT/manifests and resumes when run again."
        ),
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for spec in STAGES:
        _add_stage(commands, spec)

    run = commands.add_parser(
        "run",
        help=f"{_NAMES} in one command, resuming whatever is done",
        description=(
            f"Run every stage in order on the inputs: {', '.join(BY_NAME)}. Each stage "
            "skips the work already done (under the same settings), so running the command again after "
            "an interruption, or after adding inputs, does only what is missing. One --config file holds "
            f"every stage's settings (`python -m curate config` prints them). --workers applies to {_NAMES_WITHOUT_MODELS}; "
            "the model stages use one worker per GPU, or one on the CPU (with --executor ray: "
            f"as many actors as their ray_num_cpus/ray_num_gpus requests fit on the cluster). {_THRESHOLDS_NOTE}"
        ),
    )
    run.add_argument("inputs", nargs="+", metavar="INPUT", help=_INPUT_HELP)
    _add_replace(run)
    _add_common(run, "caption.num_frames=16 pack.short_side=256")
    _add_models(run)
    _add_against(run)
    run.set_defaults(func=_run)

    filter = commands.add_parser(
        "filter",
        help="re-apply thresholds to the stored scores (seconds; no model, no video)",
        description=(
            "Recompute drop_reason for every clip in OUT/manifests/clips.parquet from the scores "
            f"already stored and the given thresholds, then print the counts. {_THRESHOLDS_NOTE}"
        ),
    )
    _add_settings(filter, "motion.min=0.01 aesthetic.min=5")
    filter.set_defaults(func=_filter)

    report = commands.add_parser(
        "report",
        help="write OUT/report/index.html: totals, score histograms, a filterable grid of clip previews",
        description=(
            "Write one self-contained HTML page (it opens offline, nothing beside it) with the run's totals, "
            "the drop reasons, a histogram of every score, and a grid of clips with animated previews, "
            "captions and scores that can be filtered by drop reason and sorted by score."
        ),
    )
    report.add_argument("--out", default=".", help=_OUT_HELP)
    report.add_argument("--max-clips", type=int, default=300, help="clips in the grid; more are sampled evenly (default 300)")
    report.set_defaults(func=_report)

    status = commands.add_parser("status", help="summarise the manifests in an output folder")
    status.add_argument("--out", default=".", help=_OUT_HELP)
    status.set_defaults(func=_status)

    config = commands.add_parser("config", help="print the default config as YAML, one comment per key")
    config.add_argument("--config", metavar="FILE", help="show this file's values merged over the defaults")
    config.add_argument("--set", dest="overrides", metavar="KEY=VALUE", nargs="+", action="extend", default=[])
    config.set_defaults(func=_config)
    return parser


def _load(args: argparse.Namespace):
    """The output layout and this command's config (the folder's remembered thresholds, then
    --config, then --set; `--models tiny` swaps in the tiny models)."""
    layout = _layout(args.out)
    overrides = list(args.overrides)
    if getattr(args, "models", "default") == "tiny":
        overrides = [*(f"{spec.name}.model=tiny" for spec in STAGES if spec.loads_model), *overrides]
    if getattr(args, "workers", None) is not None and args.workers < 1:
        raise ConfigError("--workers must be at least 1")
    if getattr(args, "ray_address", None) and args.executor != "ray":
        raise ConfigError("--ray-address needs --executor ray")
    config = load_config(args.config, overrides, remembered=layout.config)
    against = [*config.dedup.against, *(getattr(args, "against", None) or [])]
    if against:
        from curate.storage import is_url

        # Remembered by the folder (from --against, --set or --config alike): stored absolute, so a
        # later command run from elsewhere finds it.
        config.dedup.against = list(dict.fromkeys(a if is_url(a) else os.path.abspath(a) for a in against))
    return layout, config


def _layout(out: str):
    """The output layout for --out, after checking that an object store's bucket is there (a
    wrong name or missing credentials: one `error:` line before any work starts)."""
    from curate.manifest import OutputLayout

    check_reachable(out)
    return OutputLayout(out)


def _executor_session(args: argparse.Namespace):
    """For --executor ray: connected to the cluster (or a local Ray instance) for the command's length."""
    if args.executor != "ray":
        return contextlib.nullcontext()
    from curate.ray_executor import ray_session

    return ray_session(args.ray_address, args.workers)


def _split(args: argparse.Namespace) -> int:
    if args.executor == "local":
        from curate import forkserver

        forkserver.start(stage_spec("split").preload)  # its imports overlap with this process's own
    from curate.runner import run_split
    from curate.status import summarize

    layout, config = _load(args)
    inputs = collect_inputs(args.inputs)
    if not inputs:
        raise InputError("no video files found in the given inputs")
    with _executor_session(args):
        stats = run_split(inputs, layout, config, args.workers, progress=not args.quiet, executor=args.executor, replace=args.replace)
    done = stats.units - stats.skipped
    speed = f", {stats.frames / stats.seconds:.0f} frames/s" if stats.frames and stats.seconds else ""
    print(f"split: {done} videos processed, {stats.skipped} already done, {stats.seconds:.1f} s{speed}")
    print(summarize(layout))
    return _report_failures(stats.failed, inputs)


def _clip_stage(args: argparse.Namespace) -> int:
    from curate.runner import run_clip_stage
    from curate.status import summarize

    layout, config = _load(args)
    with _executor_session(args):
        stats = run_clip_stage(args.stage, layout, config, args.workers, progress=not args.quiet, executor=args.executor)
    _print_stage(args.stage, stats, args.out)
    print(summarize(layout))
    return _report_failures(stats.failed, [], what="batches of clips")


def _print_stage(stage: str, stats, out: str) -> None:
    """One line on what a stage run did (and one on the shards after pack)."""
    speed = f", {stats.clips / stats.seconds:.1f} clips/s" if stats.clips and stats.seconds else ""
    if stats.tokens and stats.seconds:
        speed += f", {stats.tokens / stats.seconds:.0f} tokens/s"
    say(f"{stage}: {stats.clips} clips {stage_spec(stage).done_word} in {stats.units - stats.skipped} units, {stats.seconds:.1f} s{speed}")
    if stats.summary is not None:  # what the stage's `finish` found (pack: the shards; dedup: the duplicates)
        say(stats.summary.line(out))


def _run(args: argparse.Namespace) -> int:
    """Every stage in order; a stage's failed units are reported at the end, the others go on."""
    import time

    from curate.runner import run_clip_stage, run_split
    from curate.status import summarize

    started = time.perf_counter()
    layout, config = _load(args)
    inputs = collect_inputs(args.inputs)
    if not inputs:
        raise InputError("no video files found in the given inputs")
    with _executor_session(args):  # one Ray session for every stage: starting Ray takes seconds
        stats = run_split(inputs, layout, config, args.workers, progress=not args.quiet, executor=args.executor, replace=args.replace)
        say(f"split: {stats.units - stats.skipped} videos processed, {stats.skipped} already done, {stats.seconds:.1f} s")
        failed = dict(stats.failed)
        for spec in CLIP_STAGES:
            workers = None if spec.loads_model else args.workers  # model stages: their own default (a worker per GPU)
            stats = run_clip_stage(spec.name, layout, config, workers, progress=not args.quiet, executor=args.executor)
            _print_stage(spec.name, stats, args.out)
            failed.update(stats.failed)
    print(summarize(layout))
    print(f"run: {time.perf_counter() - started:.1f} s in all")
    return _report_failures(failed, inputs, what="units")


def _filter(args: argparse.Namespace) -> int:
    from curate.manifest import refilter
    from curate.status import summarize

    _require_thresholds(args.overrides)
    layout, config = _load(args)
    kept_before, kept_after = refilter(layout, config)
    print(f"filter: {kept_before} clips kept before, {kept_after} now (thresholds saved in {layout.config})")
    print(summarize(layout))
    return 0


def _require_thresholds(overrides: list[str]) -> None:
    """`filter` changes thresholds only: any other key would be saved yet change nothing."""
    thresholds = {f"{section}.{key}" for section, keys in Config().thresholds().items() for key in keys}
    for item in overrides:
        key = item.partition("=")[0].strip()
        if key not in thresholds:
            raise ConfigError(f"filter re-applies thresholds only; {key} is not one (thresholds: {', '.join(sorted(thresholds))})")


def _report_failures(failed: dict[str, str], inputs, what: str = "inputs") -> int:
    """Exit 1, naming them, when units failed inside the program (they are retried next run)."""
    if not failed:
        return 0
    paths = {v.video_id: v.path for v in inputs}
    print(
        f"error: {len(failed)} {what} failed inside vidcurate and are not in the manifests yet; run the same command again to retry them:",
        file=sys.stderr,
    )
    for unit_id, message in list(failed.items())[:10]:
        print(f"  {paths.get(unit_id, unit_id)}: {message}", file=sys.stderr)
    return 1


def _status(args: argparse.Namespace) -> int:
    from curate.status import summarize

    layout = _layout(args.out)
    if not layout.videos.exists():
        raise InputError(f"no manifests in {layout.manifests}/ (run `python -m curate split INPUT... --out {args.out}` first)")
    print(summarize(layout))
    return 0


def _report(args: argparse.Namespace) -> int:
    from curate.manifest import require_clips
    from curate.report import build_report

    layout = _layout(args.out)
    require_clips(layout)
    if args.max_clips < 1:
        raise ConfigError("--max-clips must be at least 1")
    path = build_report(layout, layout.out / "report", max_clips=args.max_clips)
    print(f"report: {path} (open it in a browser; it needs nothing else)")
    return 0


def _config(args: argparse.Namespace) -> int:
    print(describe(load_config(args.config, args.overrides)), end="")
    return 0


def run() -> NoReturn:
    """The `curate` command and `python -m curate`: `main`, then a quick exit."""
    _exit_now(main())


def _exit_now(code: int) -> NoReturn:
    """End the process without tearing down the interpreter: everything is written and closed by
    now, and freeing every loaded module (about 0.2 s with pandas, pyarrow and PyAV) would only
    delay the prompt. What else a normal exit does still happens: other threads are waited for,
    exit hooks run (Ray's shutdown, temporary folders), and output is flushed."""
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError):  # a closed pipe (`| head`): nothing more to say
            stream.flush()
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    """Parse `argv` (default: the command line), run the command and return its exit code."""
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
        sys.stdout.flush()  # now, where a closed stdout can still be told from other failures
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return drop_closed_stdout()
    return CLOSED_STDOUT if code == 0 and stdout_lost() else code  # `run` went on after losing it (`say`)
