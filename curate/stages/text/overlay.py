"""Which text boxes of a clip are overlay (burned in afterwards) and which are part of the scene.

Overlay text (subtitles, titles, tickers, channel logos) sits on top of the picture: it stays put
while the camera moves, and it lives in the bands at the top and bottom of the picture and in its
corners. Scene text (a street sign, a shop front, a T-shirt) moves with everything else. So, for
each box in each sampled frame, in this order:

1. Motion: the camera's shift between the frame and each neighbouring sampled frame is measured
   by phase correlation on small luma images (text boxes masked out, so overlay text cannot pin
   the estimate at zero). Where the camera moved, a box found again at the same place votes
   overlay, a box found again where the shift carried it votes scene; the majority decides.
2. A blank picture: text on a flat background (nothing else in the frame has texture) is a title
   card, overlay whatever its place.
3. Place: without motion evidence (a still camera, a box seen once, a shift that cannot be
   measured), a box in the top or bottom band or in a corner is overlay, any other is scene.

Everything here works in shares of the picture's width and height, so the sizes the detector
and the shift estimate ran at never leak into the results.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

MIN_SHIFT = 0.02  # camera shift (share of the picture) below which the picture counts as still
MIN_RESPONSE = 0.2  # phase-correlation peak below which the shift is unknown (random pictures give ~0.08)
MATCH_IOU = 0.5  # two boxes are the same text when they overlap this much (intersection over union)
CORNER = 0.3  # a corner: the outer share of both the width and the height
FLAT_STD = 6.0  # luma standard deviation (0-255) under which the picture outside the text is blank
SHIFT_WIDTH = 160  # width of the luma images the shift is measured on
# Text is strokes on a background: inside its box some colour channel varies a lot. The detector
# also fires on plain-coloured rectangles (a label without words, a flat object), whose boxes hold
# little more than their edges and noise.
MIN_TEXT_CONTRAST = 12.0  # standard deviation (0-255) of the most varied colour channel inside a box


@dataclass
class FrameText:
    """One sampled frame: its text boxes (x0, y0, x1, y1[, score] as shares) and a small luma image."""

    boxes: np.ndarray
    luma: np.ndarray  # float32, SHIFT_WIDTH wide


@dataclass
class ClipText:
    """What a clip's sampled frames say about its text (the stage's stored columns)."""

    area: float = 0.0  # largest share of the picture covered by overlay text in one frame
    scene_area: float = 0.0  # the same for scene text
    boxes: int = 0  # most overlay boxes in one frame
    band_top: float = 0.0  # how far overlay text in the top band reaches down (share of the height)
    band_bottom: float = 0.0  # how far overlay text in the bottom band reaches up
    mid_area: float = 0.0  # largest share covered by overlay text outside both bands (a crop cannot remove it)
    shown: list = field(default_factory=list)  # overlay boxes (x0, y0, x1, y1) of the frame with the most


def frame_text(boxes: np.ndarray, rgb: np.ndarray) -> FrameText:
    """A sampled frame as `classify` wants it, from the detector's boxes and the RGB frame it saw:
    boxes with too little contrast inside to hold text left out, and the small luma image."""
    height, width = rgb.shape[:2]
    textured = [box for box in boxes if _contrast(_middle(rgb, box)) >= MIN_TEXT_CONTRAST]
    kept = np.array(textured, np.float32).reshape(-1, 5)
    step = max(1, width // SHIFT_WIDTH)
    luma = rgb[::step, ::step].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return FrameText(kept, luma)


def _middle(rgb: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The pixels of the middle half of a box (both ways): the box was grown around the text, so
    its rim holds the background, which would lend a plain rectangle the contrast of its edges."""
    height, width = rgb.shape[:2]
    x0, y0, x1, y1 = box[:4]
    dx, dy = (x1 - x0) / 4, (y1 - y0) / 4
    return rgb[int((y0 + dy) * height) : int(np.ceil((y1 - dy) * height)), int((x0 + dx) * width) : int(np.ceil((x1 - dx) * width))]


def _contrast(pixels: np.ndarray) -> float:
    """The standard deviation of the most varied colour channel of `pixels` (0 when empty)."""
    if not pixels.size:
        return 0.0
    return float(pixels.reshape(-1, pixels.shape[-1]).std(axis=0).max())


def classify(frames: list[FrameText], band: float) -> ClipText:
    """The clip's text columns from its sampled frames, in time order; `band` is the share of the
    height at the top and at the bottom where overlay text usually sits."""
    shifts = [camera_shift(a, b) for a, b in zip(frames, frames[1:], strict=False)]
    result = ClipText()
    for i, frame in enumerate(frames):
        neighbours = []
        if i > 0 and shifts[i - 1] is not None:
            neighbours.append((frames[i - 1].boxes, -shifts[i - 1]))
        if i + 1 < len(frames) and shifts[i] is not None:
            neighbours.append((frames[i + 1].boxes, shifts[i]))
        flat = _flat_outside(frame)
        overlay = np.array([_is_overlay(box, neighbours, flat, band) for box in frame.boxes], bool)
        _add_frame(result, frame.boxes[:, :4], overlay, band)
    return result


def camera_shift(a: FrameText, b: FrameText) -> np.ndarray | None:
    """How far the picture moved from frame `a` to frame `b` (dx, dy as shares of the width and
    height), or None when it cannot be told (a cut, a flash, too little texture)."""
    first, second = _masked(a), _masked(b)
    if first.shape != second.shape or min(first.shape) < 8:
        return None
    window = cv2.createHanningWindow((first.shape[1], first.shape[0]), cv2.CV_32F)
    (dx, dy), response = cv2.phaseCorrelate(first, second, window)
    if not response >= MIN_RESPONSE:
        return None
    return np.array([dx / first.shape[1], dy / first.shape[0]])


def _masked(frame: FrameText) -> np.ndarray:
    """The luma image with its text boxes filled with its mean."""
    luma = frame.luma.copy()
    height, width = luma.shape
    for x0, y0, x1, y1 in frame.boxes[:, :4]:
        luma[int(y0 * height) : int(np.ceil(y1 * height)), int(x0 * width) : int(np.ceil(x1 * width))] = frame.luma.mean()
    return luma


def _flat_outside(frame: FrameText) -> bool:
    """Whether the picture outside the text boxes is blank (a title card on a plain background)."""
    if not len(frame.boxes):
        return False
    luma = frame.luma
    keep = np.ones(luma.shape, bool)
    height, width = luma.shape
    for x0, y0, x1, y1 in frame.boxes[:, :4]:
        keep[int(y0 * height) : int(np.ceil(y1 * height)), int(x0 * width) : int(np.ceil(x1 * width))] = False
    return bool(keep.any()) and float(luma[keep].std()) < FLAT_STD


def _is_overlay(box: np.ndarray, neighbours: list[tuple[np.ndarray, np.ndarray]], flat: bool, band: float) -> bool:
    """The rules of the module docstring, for one box."""
    votes = 0  # overlay votes minus scene votes
    for others, shift in neighbours:
        if np.abs(shift).max() < MIN_SHIFT or not len(others):
            continue  # a still camera tells nothing: scene and overlay text both stay put
        stayed = _best_iou(box[:4], others[:, :4])
        carried = _best_iou(box[:4] + np.tile(shift, 2), others[:, :4])
        if carried >= MATCH_IOU and carried > stayed:
            votes -= 1
        elif stayed >= MATCH_IOU:
            votes += 1
    if votes:
        return votes > 0
    return flat or _in_band(box, band) or _in_corner(box)


def _best_iou(box: np.ndarray, others: np.ndarray) -> float:
    x0, y0 = np.maximum(box[0], others[:, 0]), np.maximum(box[1], others[:, 1])
    x1, y1 = np.minimum(box[2], others[:, 2]), np.minimum(box[3], others[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    union = (box[2] - box[0]) * (box[3] - box[1]) + (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1]) - inter
    return float((inter / np.maximum(union, 1e-9)).max())


def _in_band(box: np.ndarray, band: float) -> bool:
    return bool(box[3] <= band or box[1] >= 1 - band)


def _in_corner(box: np.ndarray) -> bool:
    horizontal = box[2] <= CORNER or box[0] >= 1 - CORNER
    vertical = box[3] <= CORNER or box[1] >= 1 - CORNER
    return bool(horizontal and vertical)


def _add_frame(result: ClipText, boxes: np.ndarray, overlay: np.ndarray, band: float) -> None:
    """Fold one frame's classified boxes into the clip's maxima."""
    over = boxes[overlay]
    area = union_area(over)
    if area > result.area:
        result.area = area
        result.shown = [[round(float(v), 4) for v in box] for box in over]
    result.scene_area = max(result.scene_area, union_area(boxes[~overlay]))
    result.boxes = max(result.boxes, len(over))
    top = over[over[:, 3] <= band]
    bottom = over[over[:, 1] >= 1 - band]
    result.band_top = max(result.band_top, float(top[:, 3].max()) if len(top) else 0.0)
    result.band_bottom = max(result.band_bottom, float(1 - bottom[:, 1].min()) if len(bottom) else 0.0)
    middle = over[(over[:, 3] > band) & (over[:, 1] < 1 - band)]
    result.mid_area = max(result.mid_area, union_area(middle))


def union_area(boxes: np.ndarray) -> float:
    """The share of the picture that boxes (x0, y0, x1, y1 as shares) cover together, exactly:
    the plane is cut at every box edge and each covered cell counted once."""
    if not len(boxes):
        return 0.0
    xs, ys = np.unique(boxes[:, [0, 2]]), np.unique(boxes[:, [1, 3]])
    covered = np.zeros((len(ys) - 1, len(xs) - 1), bool)
    for x0, y0, x1, y1 in boxes[:, :4]:
        covered[np.searchsorted(ys, y0) : np.searchsorted(ys, y1), np.searchsorted(xs, x0) : np.searchsorted(xs, x1)] = True
    cells = np.outer(np.diff(ys), np.diff(xs))
    return float(cells[covered].sum())
