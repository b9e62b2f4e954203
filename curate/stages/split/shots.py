"""Shot-boundary detection: hard cuts, cross-dissolves and fades, from a stream of small luma grids.

Every frame becomes a unit vector on a coarse 16x9 grid (block means of the sampled luma, minus
their mean, divided by their norm). The distance between two frames, sqrt(2 - 2 * correlation),
ignores brightness and contrast changes, and camera motion barely moves content at this scale:
0 is the same picture, about 1.41 unrelated pictures. Low-contrast frames shrink smoothly
towards the zero vector, which is at distance 1 from any picture.

- Hard cut at frame t: d(t-1, t) is large both absolutely and against the typical step around
  it; it is one jump, not a burst of motion (or motion hidden by repeated frames); and neither
  does the old picture come back, nor was the new one there, within a short window and beyond
  what the shot's own motion explains (a flash, something passing close to the lens); nor, after
  a large jump of the luma histogram, does the histogram come back (a flash in a fast pan or in a
  dissolve: the picture has moved on meanwhile, the histogram barely).
- Cross-dissolve centred at t with half-width h: the pictures at t-h and t+h differ, frame t is
  a least-squares blend of the two with comparable weights, and the window changes much more
  than the same-length windows beside it, in picture or in luma histogram (the histogram only
  against windows inside the video); or, between shots in motion (which change those windows
  too), somewhat more, while frame t's contrast dips well below its ends' (a blend of unrelated
  pictures is flatter than either; a pan is not).
- Fade: a dip in contrast (blank frames, or frames far flatter than both sides), widened over
  the ramps around it; an abrupt dip of a few frames is a flash and left to the cut test. Its
  ramps count only if they head for black or white (mean luma against contrast extrapolates
  there, by least squares or by the median of the slopes between frames): a dim, mid-grey
  stretch of one shot is no fade, even one flat enough to look blank.

- Uncertain changes: a jump of the whole picture well above the motion around it that failed
  the cut tests, or a burst: a window (of any dissolve width) whose ends differ far more than
  those of the windows beside it (a wipe, a slide, a dissolve that failed the blend test),
  trimmed to the frames that move; and a contrast dip between pictures far apart, about as deep
  as a blend of the pictures where it ends (a dissolve between shots in motion, which no window
  sees as a blend); and a dissolve window that holds a cut (a flash while a dissolve is under
  way passes for a cut, since the picture moves on with the blend instead of coming back). They
  are no boundaries, but clips leave them out, as they do transitions.
- A return counts only inside one shot: a cut-like jump at least _SHORT_SHOT_S away, with steady
  frames between, makes those frames a short shot (an A-B-A cut-back), not a flash. A whole-picture
  jump the picture tests doubt is still a cut when the luma histogram jumps on that frame alone;
  so is a cut into (or out of) heavy motion that stands out against its calm side alone.
- Two shots alike in layout are close on the coarse grid: a dissolve or burst whose luma
  histogram changes far more than beside it needs less picture change, and its extent follows
  the histogram's.
- Thresholds on the distance between two pictures scale with their vectors' lengths, which
  shrink for low-contrast (bright, flat) pictures.
- A dissolve or fade whose brightness or contrast goes on moving beyond its window (a long or
  eased one) is widened over those frames, so clips keep clear of all of it.
- Wipe centred at t with half-width h (a wipe, or a slide or push that moves a straight front
  across the picture): the pictures at t-h and t+h differ in nearly every coarse cell, and each
  cell of the frames at t-h/2, t and t+h/2 matches one of them (where a dissolve blends every
  cell); the cells matching the new picture form one region, which grows across the window from
  under to over a third of the picture; and the window changes more than the ones beside it.
  Between pictures alike in part (the same sky), which differ in fewer cells, a window that passes
  the same tests on the cells that differ, split by one straight front at t, is an uncertain change.
- Slide (or push), where the front carries both pictures along so no cell matches either end: a
  burst whose every frame changes about as much, starting and stopping at once between frames
  that change far less. Kind "wipe" too.
- Pan blends: beside a fast pan, a run of frames that no camera move explains (`pans.py`: the
  previous grid moved by the pan, or left still), far worse than the frames clear of it on both
  sides: a dissolve into or out of a pan, which no picture test sees. An uncertain change.
- Dissolves between moving shots (`pans.MovingBlends`): beside a pan, a window whose middle frame
  is an even blend of its ends once each is moved by its own shot's pan, where the moved ends
  differ several times more than each shot's own frames do (smooth motion inside one shot makes
  middles blends of their neighbours too). A dissolve where no transition was found; over one,
  an uncertain change.
- Long dissolves between moving shots (`lagged.LaggedChange`): a run of frames over which a third
  of a second changes the picture, beyond the best camera move, far more than it does well clear
  of the run on both sides, clear of the transitions found and their margins, where the picture
  after the run is not the one before it moved on (something that passed in front of the camera,
  or a flash). An uncertain change, grown over the frames beside it that are still well above
  their side (away from a transition found only). A run that reaches a transition found is the
  part of it that the transition, placed late or early, leaves out: uncertain too from half a lag
  long, with the scene test only once a lag long (before that its ends lie inside the change).
  Beside a dissolve found, frames whose lagged change stays near that of the dissolve's half on
  their side are its faint ends, which the window tests left out where they centred it off its
  middle: uncertain changes too.
- A pan over smooth scenery passes for a dissolve or a wipe (a smooth picture moved half the way
  is close to a blend of it moved all of it and none): a dissolve or wipe on nearly every frame
  of which the pan tracker reads a move that explains the frame as well as it does beside it is
  the pan, and dropped.

The measures behind some of these tests live beside this module: `fades.py` (what a contrast ramp
does), `wipes.py` (the cell-by-cell wipe test), `scenes.py` (one scene before and after a change),
`pans.py` (camera moves), `lagged.py` (the change over a third of a second); this module decides.

`split.detector` may join these boundaries with TransNetV2's (`transnet.py`: every boundary either
finds, ours where both do); this module knows nothing of it.

Memory grows little with video length: the detector keeps a sliding window of vectors, and per
frame only a few floats and a quarter of a 16x9 thumbnail (about 140 bytes), and decides once the
stream ends (using about 500 more bytes per frame while it does).
"""

from __future__ import annotations

import math
import warnings
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from curate.config import SplitConfig
from curate.stages.split.fades import abrupt_blip, abrupt_edges, ramp_heads_for_blank, ramp_step
from curate.stages.split.lagged import LaggedChange
from curate.stages.split.medians import nanmedians
from curate.stages.split.pans import MovingBlends, PanTracker
from curate.stages.split.scenes import one_scene
from curate.stages.split.wipes import IS_PARTIAL_WIPE, IS_WIPE, wipe_like

_CHUNK = 1024  # frames scored in one vectorised step (a few numpy calls per width for all of them; under 1 MB a stack)
_BATCH = 64  # frames described in one vectorised step
_NEIGHBOURS = 4  # frames on each side that define the typical difference around a cut
_DIFF_FLOOR = 0.03  # keeps the cut ratio finite in perfectly static shots
_DIP = 0.35  # a frame this much flatter than the pictures on both sides is inside a fade
_RAMP = 1.5  # contrast rise across the frames around a dip that makes it a fade
_ISOLATED = 2.0  # a cut's step is at least this many times the motion steps around it
_RETURNED = 0.5  # distance under which "the old picture came back"
_MOTION_OFFSET = 5  # frames from an event to the windows that measure the shot's own motion
_SHORT_SHOT_S = 0.3  # a short shot between two cuts lasts at least this (a flash only a few frames)
_STEADY = 0.5  # the frames of such a short shot change at most this share of its cuts' steps
_SATURATED = 0.97  # share of the widest span that marks the ends of a dissolve
_CONTRAST = 2.0  # a dissolve window changes this many times more than its neighbours
_BLEND_DIP = 0.8  # a dissolve's middle frame has at most this share of its ends' mean contrast (luma std)...
_DIP_CONTRAST = 1.5  # ...and then its window need change only this many times more than its neighbours
_LOPSIDED_DIP = 0.9  # a blend window that stands out only against its calm side, with a middle this flat, is kept out of clips
_DEEP_DIP = 0.75  # a frame this much flatter than the pictures at both ends of a window...
_UNEVEN_DIP = 0.9  # (or this much, and no higher than their flattest blend: ends of unequal contrast)...
_DIP_CLIMB = 1.1  # ...in a dip whose contrast climbs this far on both sides...
_BLEND_LEVEL = (0.7, 1.0)  # ...and whose bottom is about as flat as a blend of the pictures there is kept out of clips
_DIP_MIN_HALF = 4  # (windows of fewer frames end inside such a dip)
_DIP_FRAMES = 3  # frames of such a dip in the lower half of its depth
_DIP_BOTTOM = 8  # the widest flat bottom of such a dip, in frames either side
_MIN_HIST_CHANGE = 0.2  # histogram change (total variation) that a dissolve must make
_HIST_LED = 0.5  # a window whose histogram changes this much...
_HIST_LED_CONTRAST = 3.0  # ...and this many times more than the windows beside it...
_HIST_LED_SPAN = 0.5  # ...need change the picture only this share of split.gradual_min_diff
_HIST_LED_STEP = 0.4  # (unless one frame makes more than this share of its histogram change)
_HIST_BINS = 16
_HIST_JUMP = 0.25  # histogram change (total variation) of one frame that confirms a doubtful cut...
_HIST_ISOLATED = 4.0  # ...when it is this many times the largest change of the three frames on either side
_HIST_BACK = 0.25  # after a jump of _HIST_JUMP or more, a histogram this close to the one before has come back (a flash)
_MOTION_CUT = 3.0  # a cut into heavy motion changes this many times more than any of the 3 calm frames beside it
_WHOLE_PICTURE = 0.2  # a cut's median cell change is at least this share of its RMS cell change
_SETTLING = 0.25  # luma levels per frame by which brightness or contrast still moves in a transition's tail
_UNCERTAIN_RATIO = 1.5  # a whole-picture jump this far above the motion around it is kept out of clips
_UNCERTAIN_SPREAD = 0.3  # the looser "whole picture" (see _WHOLE_PICTURE) of such a jump
_BURST_SPAN = 1.0  # a few frames that change the picture this much...
_BURST_CONTRAST = 4.0  # ...and this many times more than the frames beside them are kept out of clips
_WIDE_SPAN = 1.0  # the same for longer windows (a wipe): ends this far apart...
_WIDE_CONTRAST = 4.0  # ...this many times further than beside them, in picture or histogram...
_WIDE_HIST = 0.2  # ...with a histogram change at least this large
_FLASH_FRAMES = 2  # the longest flash a window's end may fall on
_TRIM = 0.15  # steps this small against a burst's largest are still frames at its ends
_MIN_PRESENCE = 0.5  # the least share of a distance threshold kept for low-contrast pictures
_WIPE_CONTRAST = 1.2  # a wipe window's ends differ this many times more than those of the windows beside it
# Scoring screens windows by that test a little more loosely: the decision compares spans rounded
# to float16, each up to 0.05% off.
_WIPE_SCREEN = 0.99
_WIPE_MIN_SPAN = 0.6  # windows whose ends are closer (unit-vector distance) are no wipe: not tested
_WIPE_MIN_HALF = 4  # a wipe takes 8 frames at least: faster ones are left to the cut and burst tests
_WIPE_REACH = 1.25  # a wipe spans this many half-widths of the narrowest window that found it, each side
_EDGE_STEP = 0.5  # a frame beside a wipe that changes this share of its frames' median change belongs to it
_SLIDE_STEADY = 0.4  # the steps of a slide's frames stay within this share of their median (and its inverse)
_SLIDE_CONTRAST = 3.0  # ...and are this many times those of the 3 frames on one side (at least those on the other)
_SLIDE_APART = 0.5  # ...and its pictures before and after differ by this share of split.gradual_min_diff
_SLIDE_MIN_FRAMES = 8  # a slide takes at least this many frames (a shorter burst is a flash or a cut's blur)
_WIPE_LASTS = 0.7  # pictures beyond a wipe's window differ from its other end by this share of its span
_PAN_FAST = 1.5 / 64  # a pan this fast (share of the grid's width a frame) hides a dissolve from the picture tests
_PAN_BURST = 1.8  # a frame no camera move explains this many times worse than the frames on both sides...
_PAN_FLOOR = 0.5  # ...and by at least this many luma levels (compression noise in a pan is about 1)
_PAN_GROW = 1.5  # such a run grows over the frames beside it still this far above their side
_PAN_SIDE_S = 0.4  # the frames on each side that measure it...
_PAN_CLEAR_S = 0.5  # ...this far from the frame looked at (clear of a dissolve that frame is the middle of)
_PAN_COVER = 0.9  # a transition a camera move explains on this share of its frames, and as well as beside it, is the pan
_PAN_MIN_S = 0.2  # shorter runs are a flash or something passing, left to the other tests
_MOVING_HALF_S = 1 / 3  # the half-width of the windows whose moved ends `pans.MovingBlends` blends
_LAGGED_S = 1 / 3  # the lag over which `lagged.LaggedChange` measures what no camera move explains
_LAGGED_SIDE_S = 0.5  # the frames on each side, clear of half the longest transition, that it is measured against
_LAGGED_RISE = 2.0  # a frame whose lagged change is this many times that of both sides...
_LAGGED_FLOOR = 2.0  # ...and at least this many luma levels (a still shot's own is under 1)...
_LAGGED_GROW = 1.5  # ...in a run as long as the lag, which grows over the frames beside it still this far above their side
_THUMB_EVERY = 4  # a thumbnail is kept of every fourth frame (at most 3 frames further out than asked)
_FAINT_SHARE = 1 / 3  # frames beside a dissolve whose lagged change is at least this share of its median (over its half there)...
_FAINT_TOP = 2.0  # ...and at most this many times it (a faster change there is motion, not the blend) are its faint end


@dataclass(frozen=True)
class Transition:
    """Frames [start, end) that belong to no shot, and the first frame of the new shot.

    A hard cut is an empty span (start == end == cut_frame). A fade at the very start or end of
    a video has no cut_frame: it separates a shot from nothing.
    """

    start: int
    end: int
    cut_frame: int | None
    kind: str  # "cut" | "dissolve" | "fade" | "wipe" | "uncertain" (see Detection)


@dataclass(frozen=True)
class Detection:
    """What `ShotDetector.finish` found in a video: its transitions, sorted by position, and the
    uncertain changes, where the picture changed abruptly but not clearly enough for any
    boundary test. No clip holds either; only transitions are boundaries (`cut_frames`)."""

    transitions: list[Transition]
    uncertain: list[Transition]  # kind "uncertain", without a cut_frame


Level = float | Callable[[int], float]  # the least value of every frame alike, or of frame i


class _LaggedLevels(NamedTuple):
    """The lagged change (`lagged.LaggedChange`) per frame, frames not measured counting as
    unchanged, and its medians over the frames on each side beyond half the longest transition
    that it is read against (`ShotDetector._lagged_levels`; infinite past the video's ends)."""

    change: np.ndarray
    before: np.ndarray
    after: np.ndarray
    longest: int  # the most frames a run grows to: the longest transition and a lag

    def calm(self, start: int, end: int, at_least: tuple[float, float] = (0.0, 0.0)) -> tuple[Level, Level]:
        """The levels a run [start, end) grows over, frame by frame before and after it:
        `_LAGGED_GROW` times the side there (nothing past the video's ends), half the floor, and
        `at_least`. The side is the lower of the run's own (at its first or last frame) and the
        frame's: a busy stretch of the shot beside may raise the run's, while the frame's, further
        out, may lie past it (or the other way round)."""

        def level(sides: np.ndarray, edge: int, least: float) -> Level:
            return lambda i: max(_LAGGED_GROW * min(_finite(sides[i]), _finite(sides[edge])), _LAGGED_FLOOR / 2, least)

        return level(self.before, start, at_least[0]), level(self.after, end - 1, at_least[1])


def _finite(value: float) -> float:
    """A side's median, with none (past the video's ends) counting as 0."""
    return float(value) if np.isfinite(value) else 0.0


class _PanMeasures(NamedTuple):
    """What the pan tracker (`pans.py`) measured per frame, as the pan tests read it."""

    residual: np.ndarray  # what the best camera move from the previous frame leaves unexplained
    move: np.ndarray  # that move's length, in cells (0: standing still)
    before: np.ndarray  # the residual's median over the frames on each side (`ShotDetector._pan_sides`)
    after: np.ndarray

    def explain(self, start: int, end: int) -> bool:
        """Whether a camera move explains frames [start, end): on nearly all of them
        (`_PAN_COVER`) the tracker reads a move, and the moved previous frame matches them no
        worse than it does the frames beside them. A pan over smooth scenery makes each frame
        close to an even blend of frames before and after it, and the picture tests take it for
        a dissolve or a wipe; but a real transition adds to every frame a change that no move
        explains (a blend of the next picture, or its front)."""
        inside = slice(max(1, start), end)  # the first frame has no previous one
        moving = np.count_nonzero(self.move[inside]) >= _PAN_COVER * (inside.stop - inside.start)
        sides = [side for side in (self.before[start], self.after[end - 1]) if np.isfinite(side)]  # none past an end
        return bool(moving and sides and np.median(self.residual[inside]) <= max(sides))


def frames_in(seconds: float, fps: float) -> int:
    """The whole frames that `seconds` last at `fps`, at least 2 (a gap or a transition of one
    frame is a hard cut's)."""
    return max(2, round(seconds * fps))


def half_widths(max_half_width: int) -> list[int]:
    """Roughly geometric half-widths from 2 frames up to `max_half_width`."""
    widths, h = [], 2
    while h < max_half_width:
        widths.append(h)
        h = max(h + 1, round(h * 1.4))
    widths.append(max(2, max_half_width))
    return sorted(set(widths))


class ShotDetector:
    """Feed it one luma grid per frame with `push`, then call `finish` for the transitions."""

    def __init__(self, fps: float, config: SplitConfig):
        self.fps = fps if fps and fps > 0 else 25.0
        self.config = config
        self.widths = half_widths(max(2, round(config.max_transition_s * self.fps / 2)))
        self.flash_frames = max(2, round(config.flash_window_s * self.fps))
        # A wipe's window [t-h, t+h] is compared with the pictures beyond either end (`_beyond`),
        # and with the windows 2h before and after it (`_wipe_scores`).
        widest = max(self.widths)
        self.lookahead = max(widest + self._beyond(widest), 3 * widest)
        self.lookback = self.lookahead + 2
        self.num_frames = 0  # frames described so far (pushed frames may still wait in _pending)
        # Grids not described yet: the first _num_pending rows. Each is copied in as it comes, while
        # it is still in the cache; stacking the batch later read every grid back from memory.
        self._pending: np.ndarray | None = None
        self._num_pending = 0
        self._coarse: list[np.ndarray] = []  # coarse-grid vectors of frames [_first, num_frames)
        self._blocks: list[np.ndarray] = []  # their block means, luma levels kept (the wipe test)
        self._hists: list[np.ndarray] = []  # their luma histograms: blind to motion, not to blends
        self._first = 0
        self._next_centre = 0
        self._std = array("f")  # compact: one float per frame for the whole video
        self._mean = array("f")  # and its mean luma: a fade moves brightness along with contrast
        self._spread = array("f")  # how evenly each frame's change is spread over the picture
        self._pans = PanTracker()  # per frame, what no camera move explains and the move's length (pans.py)
        self._moving = MovingBlends(round(_MOVING_HALF_S * self.fps))  # dissolves only moved ends show
        self._lagged = LaggedChange(frames_in(_LAGGED_S, self.fps))  # and long ones between shots in motion
        self._thumbs = bytearray()  # every _THUMB_EVERY-th frame's block means as bytes: the scene before and after a change
        self._thumb_shape: tuple[int, int] = (0, 0)
        self._grid_width = 0
        self._last_block: np.ndarray | None = None  # block means of the last described frame
        self._chunks: list[dict[str, np.ndarray]] = []

    def push(self, grid: np.ndarray) -> None:
        """Add the next frame's luma grid (float32, 0-255 scale)."""
        if self._pending is None:
            self._pending = np.empty((_BATCH, *grid.shape), np.float32)
        self._pending[self._num_pending] = grid
        self._num_pending += 1
        # Describing frames in batches costs a handful of numpy calls per batch instead of per
        # frame: on small videos those calls would cost as much as decoding.
        if self._num_pending == _BATCH:
            self._describe()

    def _describe(self) -> None:
        """Turn the pending grids into what the decisions use: contrast and mean luma, how evenly
        each frame's change spreads over the picture, coarse unit vectors and histograms."""
        if not self._num_pending:
            return
        grids = self._pending[: self._num_pending]  # a view: nothing below keeps it
        self._num_pending = 0
        flat = grids.reshape(len(grids), -1)
        mean = flat.mean(axis=1, keepdims=True)
        std = flat.std(axis=1, mean=mean)  # the mean once, not again inside std
        self._std.extend(std.tolist())
        self._mean.extend(mean.ravel().tolist())
        # Low-contrast pictures fade smoothly to the zero vector instead of snapping to it, so a
        # dim scene hovering around the threshold does not flicker between "blank" and "picture".
        weight = np.clip(std / self.config.flat_max_std - 1.0, 0.0, 1.0)
        blocks = _coarse(grids)
        self._spread.extend(self._spread_of(blocks).tolist())
        self._coarse.extend(_units(blocks) * weight[:, None])
        self._blocks.extend(blocks)
        self._hists.extend(_histograms(grids))
        self._pans.describe(grids)
        self._moving.push(grids, self._pans)
        self._lagged.push(grids)
        kept = blocks[-self.num_frames % _THUMB_EVERY :: _THUMB_EVERY]  # the frames that are multiples of it
        self._thumbs.extend(np.rint(np.clip(kept, 0, 255)).astype(np.uint8).tobytes())
        self._thumb_shape = blocks.shape[1:]
        self._grid_width = grids.shape[2]
        self.num_frames += len(grids)
        while self.num_frames - self._next_centre >= _CHUNK + self.lookahead:
            self._score(self._next_centre + _CHUNK)

    def _spread_of(self, blocks: np.ndarray) -> np.ndarray:
        """Per frame, the median over the coarse cells of the luma change since the previous
        frame, over its root mean square (after removing the median change, so a global brightness
        shift counts for nothing): about 0.7 when the whole picture changes, as at a cut, and near
        0 when only a part does, as when something enters the frame close to the lens."""
        flat = blocks.reshape(len(blocks), -1)
        previous = flat[:1] if self._last_block is None else self._last_block[None]
        self._last_block = flat[-1].copy()
        change = np.diff(np.concatenate([previous, flat]), axis=0)
        change -= np.median(change, axis=1, keepdims=True)
        rms = np.sqrt(np.einsum("ij,ij->i", change, change) / change.shape[1])
        return np.median(np.abs(change), axis=1) / np.maximum(rms, 1e-6)

    def blank_frames(self) -> np.ndarray:
        """Per frame fed so far, whether it is blank (black or white: luma std under
        split.flat_max_std), as the fade test sees it."""
        return np.asarray(self._std, np.float32) < self.config.flat_max_std

    def finish(self) -> Detection:
        """Score the remaining frames and return the transitions and uncertain changes."""
        self._describe()
        if not self.num_frames:
            return Detection([], [])
        if self._next_centre < self.num_frames:
            self._score(self.num_frames)
        scores = {k: np.concatenate([c[k] for c in self._chunks]).astype(np.float32) for k in self._chunks[0]}
        self._chunks.clear()
        std, mean = np.asarray(self._std, np.float32), np.asarray(self._mean, np.float32)
        spread = np.asarray(self._spread, np.float32)
        ratio = scores["step"] / (_typical_step(scores["step"]) + _DIFF_FLOOR)  # each step over the typical one
        fades = self._fades(std, mean, scores["returns"], scores["step"])
        in_fade = _near(self.num_frames, fades, margin=0)
        cuts = self._cuts(scores, ratio, in_fade, spread)
        taken = _near(self.num_frames, fades + cuts, margin=self._min_gap())
        pans = self._pan_measures()
        dissolves, shadowed = self._dissolves(scores, in_fade, taken, std, mean, _near(self.num_frames, cuts, margin=0), pans)
        wipes = self._wipes(scores, in_fade, taken, pans)
        transitions = sorted(fades + cuts + dissolves + wipes, key=lambda t: (t.start, t.end))
        uncertain = self._uncertain(scores, ratio, spread, transitions, std, mean)
        slides = self._slides(scores, uncertain, std)
        # Blend dips join the uncertain changes only now: a whip pan's motion blur dips in contrast
        # as a blend does, and its steady steps would pass for a slide.
        dips = self._blend_dips(scores, transitions + slides, std, mean)
        # Dissolves that only moved ends show come last and explain none of the changes above: a
        # short shot between two of them may hold both, and only one is seen.
        moving, overlapping = self._moving_dissolves(transitions + slides)
        uncertain += dips + shadowed + overlapping + self._pan_blends(transitions + slides, pans)
        # Last: a window that only stands out against one side is kept out only where nothing
        # above explains it.
        uncertain += self._lopsided_blends(scores, transitions + slides + moving + uncertain, std, mean, pans)
        # Then the long dissolves the lagged change shows, which may lie over or beside any of
        # those (a dissolve whose middle alone another test kept out), and the faint ends of the
        # dissolves found.
        lagged = self._lagged_levels()
        dissolves = [t for t in transitions + moving if t.kind == "dissolve"]
        uncertain = _merged(uncertain + self._lagged_blends(transitions + slides + moving, lagged) + self._faint_ends(dissolves, lagged))
        return Detection(sorted(transitions + slides + moving, key=lambda t: (t.start, t.end)), uncertain)

    # -- scoring ---------------------------------------------------------------------------

    def _score(self, stop: int) -> None:
        """Score centres [_next_centre, stop), then drop vectors no later centre will need."""
        centres = np.arange(self._next_centre, stop)
        last = self.num_frames - 1

        # Each stack is gathered once in the order of the frames the centres reach, clamped at the
        # video's ends: the rows of any offset are then a slice (a view), not a copy at every use.
        reach = max(self.lookback, _MOTION_OFFSET + self.widths[0], self.flash_frames + 1)
        frames = np.clip(np.arange(centres[0] - reach, stop + reach), 0, last) - self._first

        def rows(offset: int) -> slice:
            return slice(reach + offset, reach + offset + len(centres))

        coarse = _Pairs(np.stack(self._coarse)[frames])
        here, before = rows(0), rows(-1)
        step = coarse.dist(before, here)
        returns = np.stack([coarse.dist(before, rows(j)) for j in range(1, self.flash_frames + 1)])
        seen = np.stack([coarse.dist(here, rows(-1 - j)) for j in range(1, self.flash_frames + 1)])
        # The shot's own motion, in windows clear of the event on both sides (see _cuts).
        h = self.widths[0]
        motion = np.minimum(
            coarse.dist(rows(-_MOTION_OFFSET - h), rows(-_MOTION_OFFSET + h)),
            coarse.dist(rows(_MOTION_OFFSET - h), rows(_MOTION_OFFSET + h)),
        )
        chunk = {
            "step": step,
            "returns": returns.min(axis=0),
            "seen_before": seen.min(axis=0),
            "returns_at": _first_return(returns, step, motion),
            "seen_at": _first_return(seen, step, motion),
        }
        hists = np.stack(self._hists)[frames]
        chunk["hist_step"] = _hist_change(hists[before], hists[here])
        # A flash changes the histogram and changes it back, while motion barely moves it: after a
        # flash in a fast pan or in a dissolve the picture has moved on, but the histogram is back.
        jumps = np.flatnonzero(chunk["hist_step"] >= _HIST_JUMP)
        if len(jumps):
            at, offsets, jump = reach + jumps, range(1, self.flash_frames + 1), chunk["hist_step"][jumps]
            returns_at = _histogram_back(hists, at - 1, [at + j for j in offsets], jump)
            seen_at = _histogram_back(hists, at, [at - 1 - j for j in offsets], jump)
            chunk["returns_at"][jumps] = _sooner(chunk["returns_at"][jumps], returns_at)
            chunk["seen_at"][jumps] = _sooner(chunk["seen_at"][jumps], seen_at)
        blocks = np.stack(self._blocks)[frames]
        for h in self.widths:
            chunk.update(_blend_scores(coarse, rows(-h), here, rows(h), h))
            chunk[f"hist{h}"] = _hist_change(hists[rows(-h)], hists[rows(h)])
            if h >= _WIPE_MIN_HALF:
                chunk[f"wipe{h}"] = self._wipe_scores(coarse, blocks, rows, chunk[f"span{h}"], h)
        # float16 halves what a long video keeps per frame; the thresholds need no more precision.
        self._chunks.append({k: v.astype(np.float16) for k, v in chunk.items()})

        self._next_centre = stop
        keep_from = max(0, stop - self.lookback)
        del self._coarse[: keep_from - self._first]
        del self._blocks[: keep_from - self._first]
        del self._hists[: keep_from - self._first]
        self._first = keep_from

    def _wipe_scores(self, coarse: _Pairs, blocks: np.ndarray, rows, span: np.ndarray, h: int) -> np.ndarray:
        """`IS_WIPE` (`IS_PARTIAL_WIPE`) for the centres whose window of half-width h passes the
        wipe test (`wipes.wipe_like`) and whose change lasts: the old picture does not come back after
        the window, nor was the new one there before it (something sweeping past the lens, as a
        flash would). The cell-by-cell test is the costly part, so only windows that could be
        taken as wipes are tested: their ends are far apart, and further apart than those of the
        windows 2h before and after them (`_wipe_centres`; most windows of a shot in motion fail
        that). Elsewhere the score stays 0, which `_wipe_centres` would reject anyway."""
        wipe = np.zeros(len(span), np.float32)
        beside = np.maximum(coarse.dist(rows(-3 * h), rows(-h)), coarse.dist(rows(h), rows(3 * h)))
        tested = np.flatnonzero((span >= _WIPE_MIN_SPAN) & (span >= _WIPE_SCREEN * _WIPE_CONTRAST * beside))
        if not len(tested):
            return wipe

        def at(offset: int) -> np.ndarray:  # the tested centres' rows at this offset
            return rows(offset).start + tested

        a, b, beyond = at(-h), at(h), h + self._beyond(h)
        found = wipe_like(blocks, a, at(-(h // 2)), at(0), at(h // 2), b)
        lasting = _WIPE_LASTS * span[tested]
        found *= (coarse.dist(a, at(beyond)) >= lasting) & (coarse.dist(at(-beyond), b) >= lasting)
        wipe[tested] = found
        return wipe

    def _beyond(self, h: int) -> int:
        """How far beyond a wipe window of half-width h the pictures must stay changed: h frames,
        and at least the flash window (what passes the lens is gone by then)."""
        return max(h, self.flash_frames)

    # -- decisions -------------------------------------------------------------------------

    def _min_gap(self) -> int:
        return frames_in(self.config.min_shot_s, self.fps)

    def _max_transition(self) -> int:
        return frames_in(self.config.max_transition_s, self.fps)

    def _cuts(self, scores: dict[str, np.ndarray], ratio: np.ndarray, in_fade: np.ndarray, spread: np.ndarray) -> list[Transition]:
        step = scores["step"]
        candidate = self._cut_like(step, spread, in_fade) & (ratio >= self.config.cut_threshold) & _isolated(step)
        candidate |= self._cuts_into_motion(scores, in_fade, spread)
        candidate &= self._not_undone(candidate, step, scores["returns_at"], scores["seen_at"])
        candidate |= self._histogram_cuts(scores, ratio, in_fade, spread)
        positions = np.flatnonzero(candidate)
        strongest_first = positions[np.argsort(-step[positions], kind="stable")]
        return [Transition(t, t, t, "cut") for t in _spread(strongest_first, self._min_gap())]

    def _cut_like(self, step: np.ndarray, spread: np.ndarray, in_fade: np.ndarray) -> np.ndarray:
        """What every cut test asks first: a step of at least split.cut_min_diff that changes the
        whole picture, not into the first frame, nor into or out of a fade. (Something entering
        the frame close to the lens and staying, a hand or a tree trunk the camera passes, changes
        a large but partial area: most cells keep their luma, so the median cell change is far
        below the mean one.)"""
        found = (step >= self.config.cut_min_diff) & (spread >= _WHOLE_PICTURE)
        found[0] = False
        found[1:] &= ~(in_fade[1:] | in_fade[:-1])
        return found

    def _histogram_cuts(self, scores: dict[str, np.ndarray], ratio: np.ndarray, in_fade: np.ndarray, spread: np.ndarray) -> np.ndarray:
        """Cuts that the picture tests doubt but the luma histogram confirms. Between two shots
        alike on the coarse grid (a head before a brick wall, then another), or into a shot in
        motion, the step barely stands out and the new picture may look like one seen a few frames
        before. But the histogram jumps on that one frame and hardly moves on the frames around it,
        which motion does not do (it moves the histogram on every frame). The old picture must not
        come back closer than half the step: a flash or a short blink is no cut."""
        step, hist_step = scores["step"], scores["hist_step"]
        around = np.max([_at(hist_step, k) for k in (-3, -2, -1, 1, 2, 3)], axis=0)
        found = self._cut_like(step, spread, in_fade) & (ratio >= _UNCERTAIN_RATIO)
        found &= (hist_step >= _HIST_JUMP) & (hist_step >= _HIST_ISOLATED * around)
        found &= np.minimum(scores["returns"], scores["seen_before"]) >= _RETURNED * step
        return found

    def _cuts_into_motion(self, scores: dict[str, np.ndarray], in_fade: np.ndarray, spread: np.ndarray) -> np.ndarray:
        """Cuts into (or out of) heavy motion, judged against their calm side alone. Beside a shot
        whose every frame changes a lot (dancing), a cut does not stand out from the steps around
        it. But on its calm side neither the picture nor its histogram moved much, and the
        histogram jumps on the cut: motion starting inside a shot (a whip pan) moves the picture
        at once, but the histogram only as new parts of the scene come in. Like every cut, it must
        not be undone (`_not_undone`: a flash)."""
        step, hist_step = scores["step"], scores["hist_step"]
        found = np.zeros(len(step), bool)
        # The calm side: the 3 frames before the cut, or the 3 after it.
        for calm, calm_hist in zip(_side_maxima(step, 3), _side_maxima(hist_step, 3), strict=True):
            jumps = hist_step >= np.maximum(_HIST_JUMP, _HIST_ISOLATED * calm_hist)
            found |= jumps & (step >= _MOTION_CUT * np.maximum(calm, _DIFF_FLOOR))
        return found & self._cut_like(step, spread, in_fade)

    def _not_undone(self, jumps: np.ndarray, step: np.ndarray, returns_at: np.ndarray, seen_at: np.ndarray) -> np.ndarray:
        """Which cut-like jumps are not undone: neither does the old picture come back soon, nor
        was the new one there just before (`returns_at`, `seen_at`: frames until that happens, 0
        if it does not within the flash window). A flash or something passing close to the lens
        changes the picture and changes it back.

        A return counts only inside one shot. When another cut-like jump lies between the event
        and the return, at least _SHORT_SHOT_S away, with steady frames between the two, those
        frames are a short shot of their own, and the picture that came back belongs to the
        shot beyond it: an A-B-A cut-back, or a cut to a picture merely like the one before B.
        A flash lasts a couple of frames, and frames passing close to the lens keep changing."""
        shortest = max(2, round(_SHORT_SHOT_S * self.fps))
        jump_frames = np.flatnonzero(jumps)

        def between(first: int, last: int) -> list[int]:  # the jumps at frames first..last
            lo, hi = np.searchsorted(jump_frames, [first, last + 1])
            return jump_frames[lo:hi].tolist()

        ok = (returns_at == 0) & (seen_at == 0)
        for t in np.flatnonzero(jumps & ~ok).tolist():
            back, seen = int(returns_at[t]), int(seen_at[t])
            after = not back or any(_steady(step, t, u) for u in between(t + shortest, t + back))
            before = not seen or any(_steady(step, u, t) for u in between(t - seen, t - shortest))
            ok[t] = after and before
        return ok

    def _uncertain(
        self, scores: dict[str, np.ndarray], ratio: np.ndarray, spread: np.ndarray, transitions: list[Transition],
        std: np.ndarray, mean: np.ndarray,
    ) -> list[Transition]:  # fmt: skip
        """Abrupt changes that no boundary test accepted: a jump of the whole picture well above
        the motion around it (a cut inside heavy motion or beside a glitch, or a flash), and a
        burst of a few frames that change the picture far more than the frames beside them (a
        wipe, a very fast transition) unless a transition found there explains it. A burst is
        widened, as a dissolve is, over the frames around it whose brightness or contrast still
        moves (a long dissolve that failed the blend test, its ends barely blended). Clips leave
        them out: a boundary missed inside a clip costs more than the frames around a flash."""
        step = scores["step"]
        jump = (step >= self.config.cut_min_diff) & (ratio >= _UNCERTAIN_RATIO) & (spread >= _UNCERTAIN_SPREAD)
        jump &= ~_near(len(step), transitions, margin=0)  # a cut or a frame inside a transition is no doubt
        jump[0] = False
        found = [Transition(t, t, None, "uncertain") for t in np.flatnonzero(jump).tolist()]
        explained = _near(len(step), transitions, margin=self._min_gap())
        for h in self.widths:
            found += self._bursts(scores, h, explained, self._presence(std, h))
            found += self._partial_wipes(scores, h, explained)
        spans = []
        for change in _merged(found):
            start, end = change.start, change.end
            if end > start:  # a burst, not a single jump
                start, end = self._settled(start, end, (start + end - 1) // 2, std, mean)
            spans.append(Transition(start, end, None, "uncertain"))
        return _merged(spans)

    def _bursts(self, scores: dict[str, np.ndarray], h: int, explained: np.ndarray, presence: np.ndarray) -> list[Transition]:
        """Windows of 2h frames whose ends differ far more than those of the same-length windows
        beside them, which no transition explains: a wipe or a slide (every frame changes only part
        of the picture, so no cut test fires), a dissolve that failed the blend test. Windows of
        every width are looked at, as the dissolves are: a 16-frame wipe spreads its change over
        16 frames, and only a window that long sees all of it. Over a few frames motion barely
        moves the picture, so the shortest windows must stand out more; over longer ones a shot
        in motion moves a lot too, and the luma histogram (blind to where things are) may show
        the change better, as for dissolves. A window wider than the change itself (the narrowest
        one whose ends are as far apart as they get) adds only frames of the shots around it."""
        span, hist = scores[f"span{h}"], scores[f"hist{h}"]
        outside = np.maximum(*_beside(span, h))
        # Near either end of the video a window "beside" it is cut short (clamped), and changes
        # less for that alone; one side alone is no measure of the shot's own change either (a
        # pan's histogram drifts): a wide window counts only where both windows beside it fit.
        t = np.arange(len(span))
        fits = (t - 3 * h >= 0) & (t + 3 * h < len(span))
        by_histogram = np.zeros(len(span), bool)
        if h == self.widths[0]:
            burst = (span >= _BURST_SPAN * presence) & (span >= _BURST_CONTRAST * outside)
        else:
            # A flash at one end of a window changes its ends as much as a wipe inside it does, but
            # only while the window ends on the flash: a change that is real holds when the window
            # moves a frame or two.
            held_span = np.min([_at(span, k) for k in range(-_FLASH_FRAMES, _FLASH_FRAMES + 1)], axis=0)
            held_hist = np.min([_at(hist, k) for k in range(-_FLASH_FRAMES, _FLASH_FRAMES + 1)], axis=0)
            hist_outside = np.maximum(*_beside(hist, h))
            by_picture = (held_span >= _WIDE_SPAN * presence) & (held_span >= _WIDE_CONTRAST * outside)
            by_histogram = (held_span >= _WIDE_SPAN * presence) & (held_hist >= np.maximum(_WIDE_HIST, _WIDE_CONTRAST * hist_outside))
            # Two shots alike on the coarse grid (see _dissolves) differ in their histograms.
            by_histogram |= _histogram_led(held_hist, hist_outside, held_span, outside)
            by_histogram &= ~by_picture  # (its extent, below, is then the histogram's too)
            burst = (by_picture | by_histogram) & fits
        return [
            _trimmed(scores["step"], t - h + 1, t + h)
            for t in np.flatnonzero(burst).tolist()
            if h <= t < len(span) - h and not explained[t - h + 1 : t + h].any() and h <= self._extent(scores, t, by_histogram[t])
        ]

    def _partial_wipes(self, scores: dict[str, np.ndarray], h: int, explained: np.ndarray) -> list[Transition]:
        """Windows that pass the wipe test on the cells their ends differ in, though those are too
        few for a wipe (`wipes.wipe_like`): two pictures alike in part (the same sky, the same wall)."""
        if h < _WIPE_MIN_HALF:
            return []
        centres = [c for c in _wipe_centres(scores, h, IS_PARTIAL_WIPE).tolist() if not explained[c - h + 1 : c + h].any()]
        return [_trimmed(scores["step"], c - h + 1, c + h) for c in centres]

    def _blend_dips(
        self, scores: dict[str, np.ndarray], transitions: list[Transition], std: np.ndarray, mean: np.ndarray
    ) -> list[Transition]:
        """Contrast dips between pictures far apart, as deep as a blend of the pictures at their
        arms' ends would be: a dissolve between shots in motion, whose middle is no blend of the
        windows' ends (see _dissolves). Each spans the frames over which contrast climbs out of
        its bottom, widened as a burst is over those whose brightness or contrast still moves."""
        n = len(std)
        t = np.arange(n)
        explained = _near(n, transitions, margin=self._min_gap())
        narrowest = np.zeros(n, np.int32)  # the half-width of the narrowest window that finds each frame deep
        for h in (h for h in self.widths if h >= _DIP_MIN_HALF):
            apart = scores[f"span{h}"] >= self._min_apart(std, h)
            before, after = _at(std, -h), _at(std, h)
            flatter = np.minimum(before, after)
            # Between pictures of unequal contrast a blend's bottom lies less far below the flatter
            # one: with one twice as contrasty as the other, at 0.89 of the flatter.
            as_blend = std <= _BLEND_LEVEL[1] * _flattest_blend(before, after)
            deep = (std <= _DEEP_DIP * flatter) | ((std <= _UNEVEN_DIP * flatter) & as_blend)
            deep &= apart & (t - h >= 0) & (t + h < n)
            narrowest[deep & (narrowest == 0)] = h
        dips = []
        for first, last in runs(narrowest > 0):
            bottom = first + int(np.argmin(std[first:last]))
            # The climb is followed from the ends of that window, or _DIP_BOTTOM frames out: a long
            # blend's bottom is flat, but a wide window would reach over a broad valley of one shot.
            start, end = _dip_arms(std, bottom, min(_DIP_BOTTOM, int(narrowest[bottom])), self._max_transition())
            a, b, low = float(std[start]), float(std[end - 1]), float(std[bottom])
            # A camera move across a flat area can dip far deeper than a blend.
            blended = float(_flattest_blend(a, b))
            as_blended = _BLEND_LEVEL[0] * blended <= low <= _BLEND_LEVEL[1] * blended
            # A flash or a glitch dips for a frame or two: a blend stays low for a while.
            lasting = np.count_nonzero(std[start:end] <= (low + min(a, b)) / 2) >= _DIP_FRAMES
            if lasting and min(a, b) >= _DIP_CLIMB * low and as_blended and not explained[start:end].any():
                dips.append(Transition(*self._settled(start, end, bottom, std, mean), None, "uncertain"))
        return dips

    def _pan_blends(self, transitions: list[Transition], pans: _PanMeasures) -> list[Transition]:
        """Runs of frames that no camera move explains (`pans.py`), far worse than the frames clear
        of them on both sides, beside a fast pan on one side at least: a dissolve into or out of a
        pan, which changes the picture no faster than the pan does and need not dip in contrast.
        A run grows over the frames beside it that are still well above their side. Away from
        fast pans the picture tests see dissolves, and a shot's own action would pass for one."""
        residual, before, after = pans.residual, pans.before, pans.after
        n, longest = len(residual), self._max_transition()
        pace_before, pace_after = self._pan_sides(pans.move)
        fast = np.maximum(pace_before, pace_after) >= _PAN_FAST * self._grid_width
        hot = fast & (residual >= np.maximum(_PAN_FLOOR, _PAN_BURST * np.maximum(before, after)))
        hot[0] = False  # the first frame has no previous one
        hot[1:-1] |= hot[:-2] & hot[2:]  # one calmer frame does not split a run
        explained = _near(n, transitions, margin=self._min_gap())
        first_frame = np.arange(n) == 0  # a run grows over frames with a previous one only
        blends = []
        for start, end in runs(hot):
            if not round(_PAN_MIN_S * self.fps) <= end - start <= longest or explained[start:end].any():
                continue
            calm = (_PAN_GROW * before[start], _PAN_GROW * after[end - 1])
            blends.append(Transition(*_grown_run(residual, start, end, calm, longest, first_frame), None, "uncertain"))
        return blends

    def _pan_measures(self) -> _PanMeasures:
        """The pan tracker's measures of every frame, and the residual's side medians."""
        residual, move = np.asarray(self._pans.residual, np.float32), np.asarray(self._pans.move, np.float32)
        return _PanMeasures(residual, move, *self._pan_sides(residual))

    def _pan_sides(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per frame, the medians of `values` over the frames on each side that the pan tests
        measure it against (`_PAN_SIDE_S`, `_PAN_CLEAR_S`)."""
        side, clear = max(2, round(_PAN_SIDE_S * self.fps)), max(2, round(_PAN_CLEAR_S * self.fps))
        return _side_medians(values, side, clear)

    def _moving_dissolves(self, transitions: list[Transition]) -> tuple[list[Transition], list[Transition]]:
        """Dissolves between shots in motion that only the moved ends show (`pans.MovingBlends`):
        a run of blended centres spans its frames and 1.5h more on either side (the window's ends
        are the last frames of each shot that it saw whole, and the dissolve's middle may lie
        half a window from the centres that pass). Clear of the transitions found, it is a
        dissolve; over one, an uncertain change: a transition found there may have missed some
        of its frames (a dissolve into a fast pan passes for a wipe that starts late)."""
        h = self._moving.h
        blended_runs = runs(self._moving.finish())
        explained = _near(self.num_frames, transitions, margin=self._min_gap())
        reach, found, overlapping = h + h // 2, [], []
        # Runs closer than a window are one dissolve (the centres between them were not tried, or
        # failed: they all hold its frames).
        for start, end in _overlapping(blended_runs, gap=h):
            span = (max(0, start - reach), min(self.num_frames, end + reach))
            if explained[span[0] : span[1]].any():
                overlapping.append(Transition(*span, None, "uncertain"))
            else:
                found.append(Transition(*span, (start + end) // 2, "dissolve"))
        return found, overlapping

    def _lagged_levels(self) -> _LaggedLevels:
        """The lagged change and its side medians. Frames not measured (the first and last half
        lag) count as unchanged; sides past the video's ends are infinite, so nothing stands out
        against them there."""
        change = np.nan_to_num(self._lagged.finish(), nan=0.0)
        side, clear = frames_in(_LAGGED_SIDE_S, self.fps), self._max_transition() // 2 + 2
        return _LaggedLevels(change, *_side_medians(change, side, clear), self._max_transition() + self._lagged.lag)

    def _lagged_blends(self, found: list[Transition], levels: _LaggedLevels) -> list[Transition]:
        """Runs of frames, at least a lag long clear of the transitions found and their margins,
        whose change over the lag (`lagged.LaggedChange`) stands far above that of the frames on
        both sides beyond half the longest transition: a long dissolve between shots in motion,
        or the part of one that a transition found in the wrong place leaves. A run grows over the
        frames beside it still well above their side (its tails, which the lag spans too), up to
        the longest transition and a lag, and never into a transition's margin. Unless the scene
        after it is the scene before it, moved (something passed in front of the camera), it is an
        uncertain change.

        A run that reaches a transition's margin with no calmer frame between is part of that
        change (its tail, or the start or end that the transition, placed late or early, leaves
        out) and counts from half a lag. The scene test judges it before it grows (growing would
        take in the motion beyond), and not at all while shorter than the lag: its ends lie inside
        the change, which has barely begun there."""
        change, lag, n = levels.change, self._lagged.lag, len(levels.change)
        standing_out = (change >= _LAGGED_RISE * np.maximum(levels.before, levels.after)) & (change >= _LAGGED_FLOOR)
        hot = standing_out.copy()
        hot[1:-1] |= hot[:-2] & hot[2:]  # one calmer frame does not split a run
        explained = _near(n, found, margin=self._min_gap())
        blends = []
        for start, end in runs(hot & ~explained):
            after_found, before_found = explained[max(start - 1, 0)], explained[min(end, n - 1)]
            reaching = (after_found and standing_out[start]) or (before_found and standing_out[end - 1])
            if end - start < (lag // 2 if reaching else lag):
                continue
            beside = after_found or before_found
            if beside and end - start >= lag and self._same_scene(start - 2, end + 1):
                continue
            start, end = _grown_run(change, start, end, levels.calm(start, end), levels.longest, explained)
            if not beside and self._same_scene(start - 2, end + 1):
                continue
            blends.append(Transition(start, end, None, "uncertain"))
        return blends

    def _faint_ends(self, dissolves: list[Transition], levels: _LaggedLevels) -> list[Transition]:
        """The ends of dissolves found short. Between shots in motion the window tests may centre
        a long dissolve where it changes the picture most, well off its middle, and leave out its
        first or last frames (in a 48-frame one, a fiftieth of the other picture each). Over the
        lag those frames still change the picture about as the frames inside do: frames beside a
        dissolve whose lagged change stays between `_FAINT_SHARE` and `_FAINT_TOP` times its
        median over the dissolve's half on their side, and above the side beyond as a lagged
        blend's tail is (`_LaggedLevels.calm`), are its faint end, kept out of clips. Each value
        spans the lag around its frame, so every dissolve reaches half a lag further: only a longer
        reach counts. The faintest frames, under the shots' own motion and noise, read as no
        change: half a lag more is kept out."""
        change, half_lag = levels.change, self._lagged.lag // 2
        ends = []
        for t in dissolves:
            # Each end against the half of the dissolve on its side: something crossing the picture
            # right after a dissolve raises the lagged change of its late half only.
            middle = (t.start + t.end) // 2
            halves = [float(np.median(change[a:b])) for a, b in ((t.start, max(middle, t.start + 1)), (middle, t.end))]
            calm = levels.calm(t.start, t.end, at_least=tuple(_FAINT_SHARE * half for half in halves))
            top = tuple(_FAINT_TOP * half for half in halves)
            start, end = _grown_run(change, t.start, t.end, calm, levels.longest, top=top)
            if t.start - start > half_lag:
                ends.append(Transition(max(0, start - half_lag), t.start, None, "uncertain"))
            if end - t.end > half_lag:
                ends.append(Transition(t.end, min(len(change), end + half_lag), None, "uncertain"))
        return ends

    def _same_scene(self, before: int, after: int) -> bool:
        """Whether the thumbnails kept at or before frame `before` and at or after frame `after`
        (each clamped to the video) show one scene (`scenes.one_scene`)."""
        thumbs = np.frombuffer(self._thumbs, np.uint8).reshape(-1, *self._thumb_shape)
        first = min(max(0, before) // _THUMB_EVERY, len(thumbs) - 1)
        last = min(-(-max(0, after) // _THUMB_EVERY), len(thumbs) - 1)
        return one_scene(thumbs[first].astype(np.float32), thumbs[last].astype(np.float32))

    def _slides(self, scores: dict[str, np.ndarray], bursts: list[Transition], std: np.ndarray) -> list[Transition]:
        """Bursts (whose ends are unrelated pictures) that are a slide or push: every frame of it
        changes about as much (the front moves both pictures at a steady pace), and it starts and
        stops at once: the frames on one side change far less, and those on the other no more
        (the shot there may be in motion). The pictures before and after it differ (something
        sweeping past the lens at a steady pace leaves the old picture behind). The wipe test
        fails on a slide (its cells match neither end). A whip pan inside one shot would pass too;
        clips leave it out as a burst either way. Runs of large steps that no burst holds are not
        looked at: most are shots in motion, and slides there came with too many false boundaries."""
        step = scores["step"]
        slides = []
        for burst in (b for b in bursts if b.end - b.start >= _SLIDE_MIN_FRAMES):
            first, last = _front(step[burst.start : burst.end])
            first, last = burst.start + first, burst.start + last
            run = step[first:last]
            if not (_SLIDE_MIN_FRAMES <= len(run) <= self._max_transition() + 1) or first < 4 or last + 3 > len(step):
                continue
            level = float(np.median(run))
            calm, busy = sorted([float(step[first - 3 : first].max()), float(step[last : last + 3].max())])
            steady = run.min() >= _SLIDE_STEADY * level and run.max() <= level / _SLIDE_STEADY
            fast = level >= _SLIDE_CONTRAST * calm and level >= busy and level >= self.config.cut_min_diff / 2
            if steady and fast and self._changed(scores, std, first, last):
                slides.append(Transition(first, last - 1, (first + last - 1) // 2, "wipe"))
        return slides

    def _changed(self, scores: dict[str, np.ndarray], std: np.ndarray, first: int, last: int) -> bool:
        """Do the pictures before frame `first` and from frame `last - 1` on differ, as the ends of
        a transition do (_SLIDE_APART of split.gradual_min_diff: shots alike on the coarse grid
        count)? Read from the narrowest window that reaches over both."""
        h = next((w for w in self.widths if 2 * w >= last - first), None)
        if h is None:
            return False
        centre = (first + last) // 2 - 1
        return bool(scores[f"span{h}"][centre] >= _SLIDE_APART * self._min_apart(std, h)[centre])

    def _presence(self, std: np.ndarray, h: int) -> np.ndarray:
        """Per centre t, how far the pictures at t-h and t+h are from blank (the root mean square
        of their vectors' lengths, see _describe): two low-contrast pictures, whose vectors have
        shrunk, are at most that times 1.41 apart however unrelated they are, so thresholds on
        their distance scale with it. Never below _MIN_PRESENCE: near-blank frames say nothing."""
        weight = np.clip(std / self.config.flat_max_std - 1.0, 0.0, 1.0)
        return np.maximum(_MIN_PRESENCE, np.sqrt((_at(weight, -h) ** 2 + _at(weight, h) ** 2) / 2))

    def _min_apart(self, std: np.ndarray, h: int) -> np.ndarray:
        """Per centre t, how far apart the pictures at t-h and t+h are at least when a transition
        joins them: split.gradual_min_diff, scaled by their presence (`_presence`)."""
        return self.config.gradual_min_diff * self._presence(std, h)

    def _even_blends(self, scores: dict[str, np.ndarray], h: int) -> np.ndarray:
        """Per centre t, whether frame t is close to a blend of frames t-h and t+h (its residual
        at most split.gradual_max_residual) and an even one (`_balance` at least 0.5: each end
        weighs between a quarter and three quarters)."""
        return (scores[f"residual{h}"] <= self.config.gradual_max_residual) & (_balance(scores[f"weight{h}"]) >= 0.5)

    def _dissolves(
        self, scores, in_fade: np.ndarray, taken: np.ndarray, std: np.ndarray, mean: np.ndarray, at_cut: np.ndarray,
        pans: _PanMeasures,
    ) -> tuple[list[Transition], list[Transition]]:  # fmt: skip
        """The dissolves, strongest window first, clear of the frames `taken` (near fades and
        cuts) and of fades, and not a camera move (`_PanMeasures.explain`: then the next window
        there may still be one); and, as uncertain changes, the windows that hold a cut (`at_cut`)."""
        n = self.num_frames
        best_score = np.zeros(n, np.float32)
        dip_half = np.zeros(n, np.int32)  # half-width of the best window, where only the contrast dip found it
        by_histogram = np.zeros(n, bool)  # where the best window changes the picture too little but its histogram much
        for h in self.widths:
            span, residual, weight = scores[f"span{h}"], scores[f"residual{h}"], scores[f"weight{h}"]
            # The same-length windows just before and after must change much less: a pan or a
            # moving crowd changes every window alike, a transition only the one that holds it.
            # Histograms say the same while ignoring where things are, so motion inside the
            # neighbouring windows does not hide a dissolve from them.
            outside = np.maximum(*_beside(span, h))
            hist = scores[f"hist{h}"]
            inside = _neighbours_inside(n, h)
            # The histogram is evidence only against neighbours inside the video, as for wipes: a
            # fast pan's first frames change the histogram steadily, and a neighbour clamped at the
            # video's first or last frame cannot show that. (An endless level: no window stands
            # out against it, nor is it led by its histogram.)
            hist_outside = np.where(inside, np.maximum(*_beside(hist, h)), np.inf)
            stands_out = (span >= _CONTRAST * outside) | (hist >= np.maximum(_MIN_HIST_CHANGE, _CONTRAST * hist_outside))
            # Between two shots in motion the windows beside a dissolve change nearly as much as
            # it does. But an even blend of two unrelated pictures is flatter than either (its luma
            # std about 0.7 times theirs), where a pan or a moving crowd keeps its contrast.
            # Only windows whose neighbours lie inside the video, as for wipes: the dip is the weaker
            # evidence, and a neighbour clamped at the video's first or last frame says nothing.
            dips = (std <= _BLEND_DIP * _ends_contrast(std, h)) & inside
            by_dip = ~stands_out & dips & (span >= _DIP_CONTRAST * outside)
            stands_out |= by_dip
            # Two shots alike in layout (bright above, darker below) are close on the coarse grid
            # however different their content; their histograms still tell them apart. A dissolve
            # spreads that change over its frames: one frame that makes most of it is a cut.
            spread_out = _window_max(scores["hist_step"], h) <= _HIST_LED_STEP * hist
            hist_led = _histogram_led(hist, hist_outside, span, outside) & spread_out
            apart = self._min_apart(std, h)
            picture_led = span >= apart
            ok = (span >= apart * np.where(hist_led, _HIST_LED_SPAN, 1.0)) & self._even_blends(scores, h) & stands_out
            change = np.maximum(span - outside, np.where(hist_led, hist - hist_outside, 0.0))
            score = np.where(ok, change * (1 - residual) * _balance(weight), 0.0)
            better = score > best_score
            dip_half[better] = np.where(by_dip[better], h, 0)
            by_histogram[better] = ~picture_led[better]
            best_score = np.maximum(best_score, score)
        found, shadowed = [], []
        claimed = np.zeros(n, bool)  # frames of either kind of window so far: a weaker one there is the same change
        limit = self._max_transition()
        for t in np.argsort(-best_score, kind="stable"):
            if best_score[t] <= 0:
                break
            h = self._extent(scores, int(t), by_histogram[t])
            start, end = int(t) - h + 1, int(t) + h
            if dip_half[t]:
                start, end = _dip_arms(std, int(t), int(dip_half[t]), limit)
            if start <= 0 or end >= n or in_fade[start:end].any():
                continue
            # A flash inside a dissolve passes for a cut: after it the picture does not come back,
            # it has moved on with the blend. A window that holds a cut stays a cut (a dissolve's
            # middle frame is no blend at a real cut, so such windows are rare there), but its
            # frames stay out of clips, as those of a dissolve would.
            cut_inside = bool(at_cut[start + 1 : end].any())
            if claimed[start:end].any() or (taken[start:end].any() and not cut_inside):
                continue
            # A dissolve longer than the widest window, or easing out, goes on moving brightness
            # or contrast beyond the window: those frames are blends too. (Not so between shots in
            # motion, whose contrast drifts anyway: there the dip's arms mark the blend.)
            span = (start, end) if dip_half[t] else self._settled(start, end, int(t), std, mean)
            if not cut_inside and pans.explain(*span):
                continue
            claimed[start:end] = True
            taken[max(0, start - self._min_gap()) : end + self._min_gap()] = True
            if cut_inside:
                shadowed.append(Transition(*span, None, "uncertain"))
            else:
                found.append(Transition(*span, int(t), "dissolve"))
        return found, shadowed

    def _lopsided_blends(
        self, scores, explained_by: list[Transition], std: np.ndarray, mean: np.ndarray, pans: _PanMeasures
    ) -> list[Transition]:
        """Blend windows that stand out against the windows on one side only: a dissolve beside
        something that changes the windows on its other side as much as it does (the pan it
        dissolves out of, an object that swept past the lens just before). `_dissolves` compares
        a window with the busier of its sides, so that motion, which changes every window alike,
        passes for no dissolve. Here the window must look like a blend all the same: its middle
        frame an even blend of its ends, flatter than they are (`_LOPSIDED_DIP`: a blend of two
        pictures loses contrast, motion inside one shot does not), and left unexplained by any
        camera move (`pans.py`) far more than the frames on the quieter side (a pan that stops
        dead passes the other tests). Such windows are kept out of clips, not taken as dissolves:
        a shot whose motion starts or stops may still pass. Windows near a change found or kept
        out already add nothing."""
        n = self.num_frames
        blended = np.zeros(n, bool)
        unexplained = pans.residual >= np.maximum(_PAN_FLOOR, _PAN_BURST * np.minimum(pans.before, pans.after))
        for h in self.widths:
            span = scores[f"span{h}"]
            passes = (span >= self._min_apart(std, h)) & self._even_blends(scores, h) & unexplained
            passes &= (std <= _LOPSIDED_DIP * _ends_contrast(std, h)) & (span >= _CONTRAST * np.minimum(*_beside(span, h)))
            for t in np.flatnonzero(passes):
                blended[max(0, t - h + 1) : t + h] = True
        explained = _near(n, explained_by, margin=self._min_gap())
        return [
            Transition(*self._settled(start, end, (start + end) // 2, std, mean), None, "uncertain")
            for start, end in runs(blended)
            if not explained[start:end].any()
        ]

    def _settled(self, start: int, end: int, centre: int, std: np.ndarray, mean: np.ndarray) -> tuple[int, int]:
        """[start, end) widened on either side over the frames whose contrast or mean luma still
        moves away from its value at `centre` (see _settling), up to the longest transition."""
        limit = self._max_transition()
        start = min(_settling(std, start, centre, -1, limit), _settling(mean, start, centre, -1, limit))
        end = max(_settling(std, end - 1, centre, 1, limit), _settling(mean, end - 1, centre, 1, limit)) + 1
        return start, end

    def _extent(self, scores, t: int, by_histogram: bool = False) -> int:
        """Half-width of the dissolve centred at t: the narrowest window whose ends are (nearly)
        as far apart as they get, so blended frames on either side are all inside it. For a
        dissolve only the histogram found, in histogram too: between two shots alike on the
        coarse grid the picture distance is small and noisy, and may level off too soon."""
        widest = 0
        for name in ("span", "hist") if by_histogram else ("span",):
            values = np.array([scores[f"{name}{h}"][t] for h in self.widths])
            widest = max(widest, int(np.flatnonzero(values >= _SATURATED * values.max())[0]))
        return self.widths[widest]

    def _wipes(self, scores: dict[str, np.ndarray], in_fade: np.ndarray, taken: np.ndarray, pans: _PanMeasures) -> list[Transition]:
        """Windows whose frames pass the wipe test (`wipes.wipe_like`) and whose ends differ more than
        those of the same-length windows beside them (a shot moving fast changes those too), where
        no other transition is and no camera move explains them (`_PanMeasures.explain`);
        overlapping windows are one wipe."""
        n = self.num_frames
        windows = []  # (start, end, half-width) of the windows that found a wipe
        for h in (h for h in self.widths if h >= _WIPE_MIN_HALF):
            windows += [(c - h + 1, c + h, h) for c in _wipe_centres(scores, h, IS_WIPE).tolist()]
        wipes = []
        for start, end in _overlapping(sorted(w[:2] for w in windows)):
            if taken[start:end].any() or in_fade[start:end].any():
                continue
            inside = [w for w in windows if start <= w[0] and w[1] <= end]
            # The middle of the windows that found it is where the front is halfway across. Every
            # window that holds the wipe finds it, and so do windows a little shorter (their ends
            # already differ in most cells): the wipe spans about the narrowest one, and a margin.
            middle = int(np.median([(a + b) // 2 for a, b, _ in inside]))
            reach = math.ceil(_WIPE_REACH * min(h for _, _, h in inside))
            start, end = _moving_edges(scores["step"], max(0, middle - reach), min(n, middle + reach + 1), reach)
            if pans.explain(start, end):
                continue
            taken[max(0, start - self._min_gap()) : end + self._min_gap()] = True
            wipes.append(Transition(start, end, middle, "wipe"))
        return wipes

    def _fades(self, std: np.ndarray, mean: np.ndarray, returns: np.ndarray, step: np.ndarray) -> list[Transition]:
        """Contrast dips: runs of blank frames, or of frames far dimmer (flatter) than the
        pictures on both sides, widened over the contrast ramps around them. A dip after which
        the same picture comes back is a flash, not a fade."""
        n = len(std)
        limit = self._max_transition()
        left_max, right_max = _side_maxima(std, limit)
        # The level a ramp climbs to: the shot's contrast within half the longest transition of
        # the dip. A shot whose contrast goes on drifting up for seconds (a camera move bringing in
        # detail) would otherwise stretch the fade's slow tail far into it.
        left_level, right_level = _side_maxima(std, max(2, limit // 2))
        blank = std < self.config.flat_max_std  # as blank_frames()
        low = blank | ((std < _DIP * left_max) & (std < _DIP * right_max))
        fades = []
        for start, end in runs(low):
            if abrupt_blip(std, start, end):
                continue  # a flash or a glitch: the cut detector judges the frames around it
            # Walk out while contrast still rises, or is still well below the level it rises to.
            # A frame whose contrast wobbles against the trend (grain, a flicker, a moving bright
            # spot) does not end a ramp: the frame beyond it may carry the fade on.
            lo, level = start, left_level[start]
            while lo > 0 and start - lo < limit:
                move = ramp_step(std[max(0, lo - 2) : lo][::-1], std[lo], level)
                if not move:
                    break
                lo -= move
            hi, level = end, right_level[end - 1]
            while hi < n and hi - end < limit:
                move = ramp_step(std[hi : hi + 2], std[hi - 1], level)
                if not move:
                    break
                hi += move
            # A ramp takes contrast through at least two steps; a one-frame jump is a cut (into a
            # dim shot, or into black), which the cut detector judges.
            left_ramp = start - lo >= 2 and std[lo] > _RAMP * std[start]
            right_ramp = hi - end >= 2 and std[hi - 1] > _RAMP * std[end - 1]
            # A ramp counts only if it heads for black or white (`fades.ramp_heads_for_blank`): a dim
            # stretch of one shot (a fast pan across a flat, mid-grey area, even one flat enough to
            # count as blank) dips in contrast alone and keeps its mean.
            left_ramp = left_ramp and ramp_heads_for_blank(std[lo : start + 1], mean[lo : start + 1])
            right_ramp = right_ramp and ramp_heads_for_blank(std[end - 1 : hi][::-1], mean[end - 1 : hi][::-1])
            ramps = left_ramp or right_ramp
            # A fade dims one picture and brightens the next: across it consecutive frames stay
            # alike, apart from the odd frame at the bottom. A dark, fast camera move between two
            # cuts dips in contrast too, but changes the picture on nearly every frame.
            if hi - lo > 2 and np.median(step[lo + 1 : hi]) >= _RETURNED:
                continue
            if not ramps:
                # An abrupt dip: black frames between two cuts make a transition, unless the same
                # picture comes back after them (a glitch or a flash). A dim shot is no fade at all,
                # nor are near-blank frames that brighten slowly into one: both edges must jump.
                if not (blank[start:end].any() and all(abrupt_edges(std, start, end))):
                    continue
                if start > 0 and returns[start] < _RETURNED:
                    continue
            between_shots = lo > 0 and hi < n
            cut_frame = (lo + hi) // 2 if between_shots else None
            # Brightness may go on changing once contrast has settled (an eased fade): those
            # frames still belong to the fade, though its middle is where contrast puts it.
            lo = _settling(mean, lo, start, -1, limit)
            hi = _settling(mean, hi - 1, end - 1, 1, limit) + 1
            fades.append(Transition(lo, hi, cut_frame, "fade"))
        return fades


def _first_return(distances: np.ndarray, step: np.ndarray, motion: np.ndarray) -> np.ndarray:
    """Per centre (columns of `distances`, one row per offset 1, 2, ...), the first offset at
    which the picture came back, 0 if none did: closer than _RETURNED times the step, or no
    further away than the shot moves in a few frames (in a moving shot "the same picture" is
    only as close as motion allows)."""
    return _first_true((distances < _RETURNED * step) | (distances <= motion))


def _histogram_back(hists: np.ndarray, reference: np.ndarray, others: list[np.ndarray], jump: np.ndarray) -> np.ndarray:
    """Per jump, the first offset (1, 2, ...; 0 if none) at which the histogram of `others`' rows
    (one row array per offset) is within _HIST_BACK times the jump of the `reference` row's."""
    distances = np.stack([_hist_change(hists[reference], hists[rows]) for rows in others])
    return _first_true(distances < _HIST_BACK * jump)


def _first_true(back: np.ndarray) -> np.ndarray:
    """Per column, the first row (counted from 1) that is True; 0 if none is."""
    return np.where(back.any(axis=0), back.argmax(axis=0) + 1, 0)


def _sooner(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The earlier of two first offsets, where 0 means never."""
    return np.where((a == 0) | ((b > 0) & (b < a)), b, a)


def _steady(step: np.ndarray, start: int, end: int) -> bool:
    """Do the frames strictly between two jumps at `start` and `end` change far less than the
    jumps do (a shot), rather than keep changing (something moving past the lens)?"""
    inside = step[start + 1 : end]
    return bool(len(inside)) and float(np.median(inside)) <= _STEADY * min(float(step[start]), float(step[end]))


def _trimmed(step: np.ndarray, start: int, end: int) -> Transition:
    """An uncertain change over frames [start, end), less the frames at either end that barely
    moved (steps under _TRIM times the window's largest): a window wide enough to hold a change
    holds still frames of the shots around it too, and those may go into clips."""
    moved = np.flatnonzero(step[start:end] > _TRIM * step[start:end].max())
    return Transition(start + int(moved[0]), start + int(moved[-1]) + 1, None, "uncertain")


def _moving_edges(step: np.ndarray, start: int, end: int, limit: int, share: float = _EDGE_STEP) -> tuple[int, int]:
    """[start, end) widened, at most `limit` frames each side, over the frames next to it that still
    change about as much as those inside (steps of at least `share` times their median): where
    the front of a wipe or slide enters and leaves the picture, its change is as plain as in the
    middle, but the windows that found it may have been centred a little off."""
    least = share * float(np.median(step[start:end]))
    first, stop = start, end
    while first > 0 and start - first < limit and step[first - 1] >= least:
        first -= 1
    while stop < len(step) and stop - end < limit and step[stop] >= least:
        stop += 1
    return first, stop


def _front(steps: np.ndarray) -> tuple[int, int]:
    """[first, last) of the frames a slide's front moves through, among a burst's steps: from the
    step into its first blended frame to the step out of its last. The longest run of steps near
    the largest one, widened over the steps still near its own pace (its median): one uneven step
    inside a slide does not cut it short, and the frames of a shot in motion beside it, often as
    fast as its slowest steps but not in one run with them, stay out."""
    first, last = max(runs(steps >= _SLIDE_STEADY * steps.max()), key=lambda run: run[1] - run[0])
    return _moving_edges(steps, first, last, limit=len(steps), share=_SLIDE_STEADY)


def _merged(changes: list[Transition]) -> list[Transition]:
    """Uncertain spans, in order, the overlapping ones merged into one: the same burst seen
    through windows of several widths, or by two tests."""
    return [Transition(start, end, None, "uncertain") for start, end in _overlapping(sorted((c.start, c.end) for c in changes))]


def _settling(values: np.ndarray, edge: int, reference: int, direction: int, limit: int) -> int:
    """The last frame reached walking from a transition's outermost frame `edge` further out
    (`direction` -1 or +1), at most `limit` frames, while `values` (mean luma or contrast) keep
    moving away from their value at frame `reference` inside the transition by at least
    _SETTLING per frame (averaged over two frames, so one wobbling frame does not stop it)."""
    return _walk(values, edge, np.sign(values[edge] - values[reference]), direction, limit)


def _walk(values: np.ndarray, edge: int, away: float, direction: int, limit: int) -> int:
    """The last frame reached walking from `edge` (`direction` -1 or +1), at most `limit` frames,
    while `values` move by at least _SETTLING per frame in the sense of `away` (+1 rising, -1
    falling), averaged over two frames so one wobbling frame does not stop it."""
    position = edge
    while 0 <= position + 2 * direction < len(values) and abs(position - edge) < limit:
        if (values[position + 2 * direction] - values[position]) * away < 2 * _SETTLING:
            break
        position += direction
    return position


def _dip_arms(std: np.ndarray, t: int, least: int, most: int) -> tuple[int, int]:
    """[start, end) of a dissolve between shots in motion, centred at t: the frames over which
    contrast climbs out of its dip at t on either side (blending two unrelated pictures flattens
    them), at least `least` and at most `most` frames each way. In motion, the windows' ends keep
    moving apart however wide they get, so the widest span does not say where the blend ends. The
    climb is followed from the ends of the `least` window: the dip's bottom may be flat for a few
    frames (an even blend changes little from one frame to the next), which a walk from t would
    take for its end."""
    reach = most - least + 1
    return _walk(std, t - least + 1, 1.0, -1, reach), _walk(std, t + least - 1, 1.0, 1, reach) + 1


def _flattest_blend(a, b):
    """The contrast (luma std) of the flattest blend of two unrelated pictures of contrasts a and
    b (numbers or arrays): a*b/sqrt(a^2+b^2), reached when a's share of the blend is
    b^2/(a^2+b^2)."""
    return a * b / np.maximum(np.hypot(a, b), 1e-6)


def _side_maxima(values: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """For each index, the maximum of the `width` values before it and of the `width` after it."""
    padded = np.concatenate([np.full(width, -np.inf), values, np.full(width, -np.inf)])
    windows = np.lib.stride_tricks.sliding_window_view(padded, width)
    n = len(values)
    return windows[:n].max(axis=1), windows[width + 1 : width + 1 + n].max(axis=1)


Rows = np.ndarray | slice  # rows of a stack: their indices, or a slice (a view, no copy)


class _Pairs:
    """Dot products and distances between rows of a stack of unit (or zero) vectors."""

    def __init__(self, vectors: np.ndarray):
        self.vectors = vectors
        self.norms = np.einsum("ij,ij->i", vectors, vectors)

    def dot(self, a: Rows, b: Rows) -> np.ndarray:
        return np.einsum("ij,ij->i", self.vectors[a], self.vectors[b])

    def dist(self, a: Rows, b: Rows) -> np.ndarray:
        return np.sqrt(np.maximum(self.norms[a] + self.norms[b] - 2 * self.dot(a, b), 0.0))


def _blend_scores(pairs: _Pairs, a: Rows, m: Rows, b: Rows, h: int) -> dict[str, np.ndarray]:
    """For windows [t-h, t+h]: how far apart the ends are, and how well the centre frame is a
    blend of them (least-squares residual, and the later end's share of the blend)."""
    aa, bb, mm = pairs.norms[a], pairs.norms[b], pairs.norms[m]
    ab, am, bm = pairs.dot(a, b), pairs.dot(a, m), pairs.dot(b, m)
    det = aa * bb - ab * ab
    ok = (det > 1e-4) & (mm > 0)
    safe_det = np.where(ok, det, 1.0)
    weight_a = (bb * am - ab * bm) / safe_det
    weight_b = (aa * bm - ab * am) / safe_det
    unexplained = np.maximum(mm - (weight_a * am + weight_b * bm), 0) / np.where(mm > 0, mm, 1)
    total = weight_a + weight_b
    has_total = ok & (np.abs(total) > 1e-3)
    return {
        f"span{h}": np.sqrt(np.maximum(aa + bb - 2 * ab, 0.0)),
        f"residual{h}": np.where(ok, np.sqrt(unexplained), 1.0),
        f"weight{h}": np.where(has_total, weight_b / np.where(has_total, total, 1.0), -1.0),
    }


def _wipe_centres(scores: dict[str, np.ndarray], h: int, kind: float) -> np.ndarray:
    """Centres whose window of half-width h scored `kind` in the wipe test (`IS_WIPE` or
    `IS_PARTIAL_WIPE`) and changes more than the windows beside it (a shot moving fast changes
    those too), both of which lie inside the video."""
    span = scores[f"span{h}"]
    outside = np.maximum(*_beside(span, h))
    return np.flatnonzero((scores[f"wipe{h}"] == kind) & (span >= _WIPE_CONTRAST * outside) & _neighbours_inside(len(span), h))


def _neighbours_inside(n: int, h: int) -> np.ndarray:
    """Per centre t of n, whether the windows beside the one of half-width h at t (`_beside`)
    lie inside the video: frames t - 3h to t + 3h."""
    t = np.arange(n)
    return (t - 3 * h >= 0) & (t + 3 * h < n)


def _overlapping(spans: list[tuple[int, int]], gap: int = 0) -> list[tuple[int, int]]:
    """Sorted [start, end) spans with the overlapping ones joined (and those less than `gap` apart)."""
    joined: list[tuple[int, int]] = []
    for start, end in spans:
        if joined and start < joined[-1][1] + gap:
            joined[-1] = (joined[-1][0], max(joined[-1][1], end))
        else:
            joined.append((start, end))
    return joined


def _units(grids: np.ndarray) -> np.ndarray:
    """Zero-mean, unit-norm copies of a stack of grids, one vector per row."""
    values = grids.reshape(len(grids), -1).astype(np.float32)
    values -= values.mean(axis=1, keepdims=True)
    norms = np.sqrt(np.einsum("ij,ij->i", values, values))
    return values / np.where(norms > 0, norms, 1.0)[:, None]


def _histograms(grids: np.ndarray) -> np.ndarray:
    """Normalised luma histograms of a stack of grids, one row per grid."""
    count, size = len(grids), grids[0].size
    # Scaling by a power of two and truncating gives exact bins; integer division over every
    # sample cost as much as the rest of the detector.
    bins = (np.clip(grids.reshape(count, size), 0, 255) * (_HIST_BINS / 256)).astype(np.int32)
    bins += np.arange(count, dtype=np.int32)[:, None] * _HIST_BINS  # one bin range per grid
    counts = np.bincount(bins.ravel(), minlength=count * _HIST_BINS).reshape(count, _HIST_BINS)
    return counts.astype(np.float32) / size


def _hist_change(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row, how far two stacks of normalised histograms differ (total variation: 0 to 1)."""
    return 0.5 * np.abs(a - b).sum(axis=1)


def _coarse(grids: np.ndarray, factor: int = 4) -> np.ndarray:
    """Block means of factor x factor cells of a stack of grids: camera motion barely moves
    content at this scale."""
    h, w = grids.shape[1] // factor * factor, grids.shape[2] // factor * factor
    if h == 0 or w == 0:
        return grids.copy()  # the caller's grids are a buffer that it fills again
    # Rows, then columns, as sums of strided slices: numpy's sums over short inner axes cost
    # several times more. Grid values are multiples of 1/4 under 256, so every sum is exact in
    # float32 and the order changes no bit.
    rows = sum(grids[:, i:h:factor, :w] for i in range(factor))
    return sum(rows[:, :, i::factor] for i in range(factor)) / np.float32(factor * factor)


def _isolated(step: np.ndarray) -> np.ndarray:
    """Steps that are one jump: the largest within two frames, and well above any run of motion
    next to them. Motion keeps going (large steps on two frames in a row on one side, or on
    both sides); a blended frame makes one large neighbour, which does not hide a cut."""
    padded = np.pad(step, 2, constant_values=0.0)
    window = np.lib.stride_tricks.sliding_window_view(padded, 5)  # steps t-2 .. t+2
    before2, before1, _, after1, after2 = window.T
    # Repeated frames (slow motion, frame-rate conversion) hide motion on every other step, so
    # the steps two frames away on both sides count as motion too.
    motion = np.maximum.reduce(
        [
            np.minimum(before1, after1),
            np.minimum(before1, before2),
            np.minimum(after1, after2),
            np.minimum(before2, after2),
        ]
    )
    return (step >= window.max(axis=1)) & (step >= _ISOLATED * motion)


def _typical_step(step: np.ndarray) -> np.ndarray:
    """Mean of the median steps just before and just after each frame."""
    k = _NEIGHBOURS
    padded = np.concatenate([np.full(k, np.nan), step, np.full(k + 1, np.nan)]).astype(np.float64)
    padded[k] = np.nan  # frame 0 has no previous frame, so no step
    medians = nanmedians(np.lib.stride_tricks.sliding_window_view(padded, k))
    n = len(step)
    left, right = medians[0:n], medians[k + 1 : k + 1 + n]  # of steps t-k .. t-1, and t+1 .. t+k
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN windows at the edges are expected
        typical = np.nanmean(np.stack([left, right]), axis=0)
    return np.nan_to_num(typical, nan=0.0).astype(np.float32)


def _grown_run(
    values: np.ndarray, start: int, end: int, calm: tuple[Level, Level], longest: int, blocked: np.ndarray | None = None,
    top: tuple[float, float] = (math.inf, math.inf),
) -> tuple[int, int]:  # fmt: skip
    """The run [start, end) grown over the frames beside it whose value is at least `calm` (the
    level before it, the level after it: one for every frame, or one per frame) and at most `top`
    (before it, after it), up to `longest` frames in all, onto no `blocked` frame."""

    def open_at(i: int, level: Level, most: float) -> bool:
        least = level(i) if callable(level) else level
        return least <= values[i] <= most and (blocked is None or not blocked[i])

    while start > 0 and end - start < longest and open_at(start - 1, calm[0], top[0]):
        start -= 1
    while end < len(values) and end - start < longest and open_at(end, calm[1], top[1]):
        end += 1
    return start, end


def _side_medians(values: np.ndarray, side: int, clear: int) -> tuple[np.ndarray, np.ndarray]:
    """Per frame t, the medians of values[t - clear - side : t - clear] and of
    values[t + clear + 1 : t + clear + 1 + side]: infinite where that reaches past the video's
    ends (no measure there, so nothing stands out against it)."""
    n = len(values)
    pad = np.full(clear + side + 1, np.nan)
    windows = np.lib.stride_tricks.sliding_window_view(np.concatenate([pad[:-1], values.astype(np.float64), pad]), side)
    medians = np.nan_to_num(np.median(windows, axis=1), nan=np.inf)  # NaN: the window reaches past an end
    return medians[:n], medians[2 * clear + side + 1 : 2 * clear + side + 1 + n]


def _at(values: np.ndarray, offset: int) -> np.ndarray:
    """values[t + offset] for every t, clamped at both ends of the video."""
    return values.take(np.arange(offset, len(values) + offset), axis=0, mode="clip")


def _beside(values: np.ndarray, h: int) -> tuple[np.ndarray, np.ndarray]:
    """Per centre t, a window score of half-width h (span, hist) at the windows just before and
    just after the window at t (centred 2h away): what a transition must stand out against."""
    return _at(values, -2 * h), _at(values, 2 * h)


def _ends_contrast(std: np.ndarray, h: int) -> np.ndarray:
    """Per centre t, the mean contrast (luma std) of frames t-h and t+h: a blend of two pictures
    is flatter than they are."""
    return (_at(std, -h) + _at(std, h)) / 2


def _balance(weight: np.ndarray) -> np.ndarray:
    """1 where a window's middle frame is an even blend of its ends, 0 where it is one of them
    (`weight`: the later end's share of the blend, see `_blend_scores`)."""
    return 1 - 2 * np.abs(weight - 0.5)


def _histogram_led(hist: np.ndarray, hist_outside: np.ndarray, span: np.ndarray, outside: np.ndarray) -> np.ndarray:
    """Windows whose luma histogram changes far more (_HIST_LED, _HIST_LED_CONTRAST times the
    windows beside them) than their picture says, between two shots alike on the coarse grid;
    the picture must still change at least as much as beside them (a low-contrast pan's narrow
    histogram swings too, while its picture changes all along)."""
    return (hist >= _HIST_LED) & (hist >= _HIST_LED_CONTRAST * hist_outside) & (span >= outside)


def _window_max(values: np.ndarray, h: int) -> np.ndarray:
    """Per centre t, the largest of values[t-h+1 .. t+h] (the steps into the frames of the window
    [t-h, t+h]), clamped at the ends."""
    padded = np.concatenate([np.full(h - 1, values[0]), values, np.full(h, values[-1])])
    return np.lib.stride_tricks.sliding_window_view(padded, 2 * h).max(axis=1)


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each run of True values in a 1-D mask (also read by TransNetV2's rules)."""
    padded = np.concatenate([[False], mask, [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def _spread(positions: np.ndarray, min_gap: int) -> list[int]:
    """Keep positions in the given (strongest first) order unless within min_gap of a kept one."""
    kept: list[int] = []
    for t in positions.tolist():
        if all(abs(t - k) >= min_gap for k in kept):
            kept.append(int(t))
    return kept


def _near(n: int, transitions: list[Transition], margin: int) -> np.ndarray:
    """Frames within `margin` of any of the transitions."""
    taken = np.zeros(n, bool)
    for t in transitions:
        taken[max(0, t.start - margin) : max(t.end, t.start + 1) + margin] = True
    return taken


def shots_between(num_frames: int, transitions: list[Transition]) -> list[tuple[int, int]]:
    """The [start, end) frame spans of the shots that the transitions separate."""
    shots, position = [], 0
    for t in sorted(transitions, key=lambda t: t.start):
        if t.start > position:
            shots.append((position, t.start))
        position = max(position, t.end)
    if position < num_frames:
        shots.append((position, num_frames))
    return shots
