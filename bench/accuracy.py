"""Shot-boundary accuracy of `curate split`'s detectors against PySceneDetect's.

    python bench/accuracy.py [--videos N] [--seeds FIRST] [--size WxH] [--moving N] [--real DIR] [--only GLOB]
                             [--detectors heuristic,transnetv2,ensemble] [--totals-only] [--no-baseline]

Scores, side by side on the same videos, split.detector heuristic, transnetv2 and ensemble (the
model's outputs cached per video under bench/out/accuracy/transnet/, so re-tuning the rules costs
no model pass) and PySceneDetect's adaptive and content detectors (their cuts shaped into clips
as curate shapes its own), on:
- synthetic edits from `curate.synthetic.edited_video` (hard cuts, 16-frame dissolves, fades through
  black, fast pans, flashes, occlusions), N seeds, ground truth known exactly;
- with --moving N, N two-shot edits from `curate.synthetic.moving_dissolve`: one dissolve of
  16-48 frames between shots whose cameras move (slow pans in any direction, fast sideways ones);
- real footage in DIR (default `.realdata/`; bench/realdata/README.md says where to fetch it):
  labels from `bench/realdata/<video>.truth.json` or a `<video>.truth.json` beside the video, with
  hand-labelled `hard_cuts` (first frame of the new shot) and `gradual` ([first, last] frames);
  detections inside `dont_care_ranges` ([first, last]) or at `leader_tail_events` (black leader
  or tail frames) are not scored.

Hard cuts count within +-2 frames, gradual transitions within +-8 frames of their middle frame.
A detection near a gradual transition is credited to it, not counted against hard cuts, and vice
versa, so no detector is punished for calling a dissolve a cut. The script also counts, per
method, the clips that straddle a true boundary (the target is zero), and the share of frames the
clips keep (what avoiding boundaries costs).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from curate import synthetic  # noqa: E402
from curate.config import SplitConfig  # noqa: E402
from curate.inputs import VideoInput  # noqa: E402
from curate.stages.base import Unit  # noqa: E402
from curate.stages.split import transnet  # noqa: E402
from curate.stages.split.shots import Transition  # noqa: E402
from curate.stages.split.stage import SplitStage  # noqa: E402
from curate.stages.split.video import clip_spans  # noqa: E402

LABELS = ROOT / "bench" / "realdata"  # hand-made labels of the real footage (bench/realdata/README.md)
HARD_TOLERANCE = 2
GRADUAL_TOLERANCE = 8


def pairs(predicted: list[int], truth: list[int], tolerance: int) -> dict[int, int]:
    """Greedy one-to-one matching, each truth in turn taking the nearest free prediction within
    `tolerance`: {index in truth: index in predicted}."""
    matched: dict[int, int] = {}
    for j, t in enumerate(truth):
        free = [i for i, p in enumerate(predicted) if abs(p - t) <= tolerance and i not in matched.values()]
        if free:
            matched[j] = min(free, key=lambda i: abs(predicted[i] - t))  # the first of equally near ones
    return matched


def match(predicted: list[int], truth: list[int], tolerance: int) -> tuple[int, set[int]]:
    """Greedy one-to-one matching (`pairs`); returns (true positives, indices of matched predictions)."""
    matched = pairs(predicted, truth, tolerance)
    return len(matched), set(matched.values())


def score(predicted: list[int], hard: list[int], gradual_middles: list[int]) -> dict[str, int]:
    """Counts for both kinds of boundary from one list of predicted cut frames."""
    hard_hits, hard_used = match(predicted, hard, HARD_TOLERANCE)
    gradual_hits, gradual_used = match(predicted, gradual_middles, GRADUAL_TOLERANCE)
    near_gradual = {i for i, p in enumerate(predicted) if any(abs(p - g) <= GRADUAL_TOLERANCE for g in gradual_middles)}
    near_hard = {i for i, p in enumerate(predicted) if any(abs(p - h) <= HARD_TOLERANCE for h in hard)}
    hard_false = len([i for i in range(len(predicted)) if i not in hard_used and i not in near_gradual])
    gradual_false = len([i for i in range(len(predicted)) if i not in gradual_used and i not in near_hard])
    return {
        "hard_tp": hard_hits,
        "hard_fp": hard_false,
        "hard_fn": len(hard) - hard_hits,
        "grad_tp": gradual_hits,
        "grad_fp": gradual_false,
        "grad_fn": len(gradual_middles) - gradual_hits,
    }


def f1(tp: int, fp: int, fn: int) -> float:
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0


DETECTORS = ("heuristic", "transnetv2", "ensemble")  # split.detector values
METHODS = (*DETECTORS, "psd-adaptive", "psd-content")
CACHE = ROOT / "bench" / "out" / "accuracy" / "transnet"  # per-video model outputs, so rules can be re-tuned


def detect_all(
    path: Path, config: SplitConfig, baseline: bool, detectors: tuple[str, ...] = DETECTORS
) -> tuple[dict[str, tuple[list[int], list[tuple[int, int]]]], int, dict]:
    """Every method's cut frames and [start, end) clips on one video, its frame count, and seconds
    per method. Our three run through the split stage; the model's outputs are computed once per
    video (and file size) and cached under bench/out/accuracy/transnet/, so the transnetv2 and
    ensemble runs cost one model pass in all. PySceneDetect's cuts are shaped into clips as curate would."""
    found, seconds = {}, {}
    model = CachedModel(path)
    for detector in detectors:
        start = time.perf_counter()
        found[detector], num_frames, fps = run_stage(path, replace(config, detector=detector), model)
        seconds[detector] = time.perf_counter() - start
    for method, detector in (("psd-adaptive", "AdaptiveDetector"), ("psd-content", "ContentDetector")) if baseline else ():
        start = time.perf_counter()
        cuts = pyscenedetect(path, detector)
        seconds[method] = time.perf_counter() - start
        found[method] = (cuts, clip_spans(num_frames, [Transition(c, c, c, "cut") for c in cuts], fps, config))
    return found, num_frames, seconds


class CachedModel:
    """TransNetV2 for one video, its outputs cached on disk (the split stage's `stream()` of it)."""

    def __init__(self, path: Path):
        self.file = CACHE / f"{path.name}-{path.stat().st_size}.npz"
        self.frames: list[np.ndarray] = []

    def stream(self) -> CachedModel:
        self.frames = []
        return self

    def push(self, frame: np.ndarray) -> None:
        if not self.file.exists():
            self.frames.append(frame)

    def finish(self) -> transnet.Probabilities:
        if not self.file.exists():
            outputs = transnet.TransNet("cpu")(np.stack(self.frames))
            CACHE.mkdir(parents=True, exist_ok=True)
            np.savez(self.file, single=outputs.single, many_hot=outputs.many_hot)
        stored = np.load(self.file, allow_pickle=False)
        return transnet.Probabilities(stored["single"], stored["many_hot"])


def run_stage(path: Path, config: SplitConfig, model) -> tuple[tuple[list[int], list[tuple[int, int]]], int, float]:
    """curate's cut frames and its clips' [start, end) frames, the frame count and the fps."""
    stage = SplitStage(config)
    stage._model = model  # the cached model outputs (bench only)
    outputs, _ = stage.process(Unit("bench", VideoInput("bench", str(path))))
    video = outputs["videos"].to_pylist()[0]
    clips = [(c["start_frame"], c["end_frame"]) for c in outputs["clips"].to_pylist()]
    return (list(video["cut_frames"] or []), clips), video["num_frames"], video["fps"]


def pyscenedetect(path: Path, detector: str) -> list[int]:
    import scenedetect

    scenes = scenedetect.detect(str(path), getattr(scenedetect, detector)())
    return [start.frame_num if hasattr(start, "frame_num") else start.get_frames() for start, _ in scenes[1:]]


def straddling(clips: list[tuple[int, int]], hard: list[int], gradual: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The clips holding both sides of a hard cut, or any frame of a gradual transition."""
    return [
        (start, end) for start, end in clips
        if any(start < t < end for t in hard) or any(start <= last and first < end for first, last in gradual)
    ]  # fmt: skip


def synthetic_set(
    count: int, folder: Path, first_seed: int = 0, size: tuple[int, int] = (320, 180), kind: str = "edit"
) -> list[tuple[Path, list[int], list[tuple[int, int]]]]:
    """`count` synthetic videos from `first_seed` on, each written once under `folder`, with their
    truth: random edits (`kind` "edit", `curate.synthetic.edited_video`) or two-shot dissolves
    between moving shots ("moving", `curate.synthetic.moving_dissolve`)."""
    videos = []
    suffix = "" if size == (320, 180) else f"-{size[0]}x{size[1]}"
    for seed in range(first_seed, first_seed + count):
        shots, joins = synthetic.edited_video(seed, num_shots=8) if kind == "edit" else synthetic.moving_dissolve(seed)
        path = folder / f"{kind}-{seed:03d}{suffix}.mp4"
        truth = synthetic.truth(shots, joins)
        if not path.exists():
            synthetic.make_video(path, shots, joins, width=size[0], height=size[1], fps=24)
        videos.append((path, truth.hard_cuts, truth.gradual, []))
    return videos


def real_set(folder: Path) -> list[tuple[Path, list[int], list[tuple[int, int]]]]:
    """Videos in `folder` with labels beside them, or else in bench/realdata/ (committed)."""
    videos = []
    truth_files = {p.name: p for p in sorted(LABELS.glob("*.truth.json"))}
    truth_files.update({p.name: p for p in sorted(folder.glob("*.truth.json"))})
    for name, truth_file in sorted(truth_files.items()):
        truth = json.loads(truth_file.read_text())
        path = folder / name.removesuffix(".truth.json")
        if path.exists():
            ignored = [tuple(r) for r in truth.get("dont_care_ranges", [])]
            for kind in ("hard_cuts", "gradual"):  # events involving only leader/tail black frames
                for event in truth.get("leader_tail_events", {}).get(kind, []):
                    first, last = (event, event) if kind == "hard_cuts" else event
                    ignored.append((first - HARD_TOLERANCE, last + HARD_TOLERANCE))
            videos.append((path, truth["hard_cuts"], [tuple(g) for g in truth["gradual"]], ignored))
    return videos


def evaluate(
    name: str, videos, config: SplitConfig, verbose: bool, baseline: bool = True, detectors: tuple[str, ...] = DETECTORS,
    totals_only: bool = False,
) -> None:  # fmt: skip
    totals = {m: {"clips_bad": 0, "clips": 0, "kept": 0, "frames": 0, "seconds": 0.0} for m in METHODS}
    per_video = []  # (name, cuts, gradual, {method: (hard F1, gradual F1)})
    for path, hard, gradual, ignored in videos:
        middles = [(a + b + 1) // 2 for a, b in gradual]
        found, num_frames, seconds = detect_all(path, config, baseline, detectors)
        scores = {}
        for method, (cuts, clips) in found.items():
            t = totals[method]
            cuts = [f for f in cuts if not any(a <= f <= b for a, b in ignored)]
            counts = score(cuts, hard, middles)
            for key, value in counts.items():
                t[key] = t.get(key, 0) + value
            bad = straddling(clips, hard, gradual)
            t["clips_bad"] += len(bad)
            t["clips"] += len(clips)
            t["kept"] += sum(end - start for start, end in clips)
            t["frames"] += num_frames
            t["seconds"] += seconds[method]
            scores[method] = tuple(f1(counts[f"{k}_tp"], counts[f"{k}_fp"], counts[f"{k}_fn"]) for k in ("hard", "grad"))
            if verbose:
                print(f"  {path.name:28} {method:13} {counts}  found={cuts}" + (f"  straddling={bad}" if bad else ""))
        per_video.append((path.name, len(hard), len(gradual), scores))
        if verbose:
            print(f"  {path.name:28} truth         hard={hard} gradual={gradual}")
    methods = [m for m in METHODS if m in detectors or (baseline and m.startswith("psd"))]
    print(f"\n{name}: {len(videos)} videos")
    print(f"{'method':13} {'hard P':>7} {'hard R':>7} {'hard F1':>8} {'grad P':>7} {'grad R':>7} {'grad F1':>8} "
          f"{'straddling':>11} {'in clips':>9} {'seconds':>8}")  # fmt: skip
    for method in methods:
        t = totals[method]
        hp = t["hard_tp"] / max(1, t["hard_tp"] + t["hard_fp"])
        hr = t["hard_tp"] / max(1, t["hard_tp"] + t["hard_fn"])
        gp = t["grad_tp"] / max(1, t["grad_tp"] + t["grad_fp"])
        gr = t["grad_tp"] / max(1, t["grad_tp"] + t["grad_fn"])
        print(
            f"{method:13} {hp:7.3f} {hr:7.3f} {f1(t['hard_tp'], t['hard_fp'], t['hard_fn']):8.3f} "
            f"{gp:7.3f} {gr:7.3f} {f1(t['grad_tp'], t['grad_fp'], t['grad_fn']):8.3f} "
            f"{t['clips_bad']:>4} of {t['clips']:<4} {t['kept'] / max(1, t['frames']):9.3f} {t['seconds']:8.1f}"
        )
    print("(seconds: the model's pass counts only where it was not cached yet, in transnetv2's run; bench/split.py")
    print(" measures speed. PySceneDetect's clips are shaped from its cuts as curate shapes them)")
    if totals_only:
        return
    print("hard-cut F1 / gradual F1 per video:")
    print(f"  {'video':28} {'cuts':>4} {'grad':>4}  " + "  ".join(f"{m:>13}" for m in methods))
    for video, cuts, grad, scores in per_video:
        cells = "  ".join(f"{scores[m][0]:6.3f}/{scores[m][1]:6.3f}" for m in methods)
        print(f"  {video:28} {cuts:4d} {grad:4d}  {cells}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=20, help="synthetic edits to score (default 20)")
    parser.add_argument("--seeds", type=int, default=0, help="first synthetic seed (default 0); e.g. 100 for a held-out set")
    parser.add_argument(
        "--moving", type=int, default=0,
        help="also score N dissolves between moving shots (`curate.synthetic.moving_dissolve`, seeds from --seeds)",
    )  # fmt: skip
    parser.add_argument("--size", default="320x180", help="synthetic edits' WIDTHxHEIGHT (default 320x180)")
    parser.add_argument("--real", type=Path, default=ROOT / ".realdata", help="folder of real videos with .truth.json")
    parser.add_argument("--set", dest="overrides", nargs="*", default=[], help="split.* overrides to try")
    parser.add_argument("--only", default="*", help="real videos whose file name matches this glob (default all)")
    parser.add_argument("-v", "--verbose", action="store_true", help="per-video detail")
    parser.add_argument("--no-baseline", action="store_true", help="skip PySceneDetect (faster tuning runs)")
    parser.add_argument(
        "--detectors", default=",".join(DETECTORS),
        help="split.detector values to score, comma-separated (default all three; heuristic alone needs no model pass)",
    )  # fmt: skip
    parser.add_argument(
        "--totals-only", action="store_true",
        help="print each set's totals, not its per-video rows (for held-out sets: score them without looking into them)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    from curate.config import load_config

    config = load_config(None, args.overrides).split
    detectors = tuple(d.strip() for d in args.detectors.split(",") if d.strip())
    unknown = sorted(set(detectors) - set(DETECTORS))
    if unknown or not detectors:
        parser.error(f"--detectors takes some of {', '.join(DETECTORS)}; got {args.detectors!r}")
    print(f"date {time.strftime('%Y-%m-%d')}; tolerance: hard +-{HARD_TOLERANCE}, gradual +-{GRADUAL_TOLERANCE} frames")
    folder = ROOT / "bench" / "out" / "accuracy"
    folder.mkdir(parents=True, exist_ok=True)
    if args.videos:
        size = tuple(int(v) for v in args.size.split("x"))
        videos = synthetic_set(args.videos, folder, args.seeds, size)
        evaluate("synthetic edits", videos, config, args.verbose, not args.no_baseline, detectors, args.totals_only)
    if args.moving:
        videos = synthetic_set(args.moving, folder, args.seeds, kind="moving")
        evaluate("dissolves between moving shots", videos, config, args.verbose, not args.no_baseline, detectors, args.totals_only)
    real = [v for v in real_set(args.real) if fnmatch.fnmatch(v[0].name, args.only)] if args.real.exists() else []
    if real:
        evaluate(f"real footage ({args.real})", real, config, args.verbose, not args.no_baseline, detectors, args.totals_only)
    else:
        print(f"\nno real footage with ground truth in {args.real}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
