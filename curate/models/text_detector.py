"""PP-OCRv4's text detection network (a DB text detector) run with onnxruntime, and its output read
as boxes.

The published weights ship as an ONNX file inside PyPI's `rapidocr-onnxruntime` wheel, so the real
model runs everywhere (tests and the demo included) with nothing downloaded. Only that one file is
used: rapidocr's own pipeline (recognition, angle classification, one image per call) is never
imported. Frames go through in batches of one size: the network's input axes are all dynamic.

What the network wants and what its output means follow rapidocr's detection code (its
`ch_ppocr_det` package): BGR pixels scaled to [-1, 1] (mean 0.5, std 0.5), sides multiples of 32;
out comes a text probability per pixel. A region of pixels above `BINARY_THRESHOLD`, whose mean
probability over its box reaches `BOX_THRESHOLD`, is a text box, grown by the DB "unclip" distance
(the network is trained to mark a shrunk core of each text line).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from curate.errors import ModelUnavailable

PACKAGE = "rapidocr_onnxruntime"
MODEL_FILE = "ch_PP-OCRv4_det_infer.onnx"
CUDA_PROVIDER = "CUDAExecutionProvider"

# Post-processing of the probability map, as rapidocr configures PP-OCRv4 detection.
BINARY_THRESHOLD = 0.3  # a pixel is text above this probability
BOX_THRESHOLD = 0.5  # a region is a text box when its box's mean probability reaches this
UNCLIP_RATIO = 1.6  # how far a box grows: its area * ratio / its perimeter
MIN_SIDE_PX = 3  # regions thinner than this (in map pixels) are noise
# The network marks the core of each text line (about half its height). On video it also fires
# on big dark objects and busy textures (a held cup, a face, foliage: regions 0.2-0.45 of the
# picture's height, about as wide as tall); the core of even a large title line is lower than this
# share of the picture's height, so taller regions are not read as text.
MAX_LINE_HEIGHT = 0.16


def model_path(weights: str = "") -> Path:
    """The ONNX file: `weights` when given, else the PP-OCRv4 detection model inside the installed
    rapidocr-onnxruntime package (found without importing it: its package imports all of rapidocr)."""
    if weights:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise ModelUnavailable(f"text detector: no ONNX file at text.weights={weights}")
        return path
    spec = importlib.util.find_spec(PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder) / "models" / MODEL_FILE
        if path.is_file():
            return path
    raise ModelUnavailable(
        f"text detector: {MODEL_FILE} not found (install it with `pip install 'rapidocr-onnxruntime>=1.4,<2'`, "
        "or point --set text.weights=/path/to/det.onnx at a PP-OCR detection model)"
    )


def providers(device: str) -> list[str]:
    """onnxruntime's execution providers for `device` (auto: CUDA when onnxruntime-gpu offers it)."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device == "cpu" or (device == "auto" and CUDA_PROVIDER not in available):
        return ["CPUExecutionProvider"]
    if CUDA_PROVIDER not in available:
        raise ModelUnavailable(f"text.device={device} but onnxruntime has no CUDA provider (pip install onnxruntime-gpu); use auto or cpu")
    return [CUDA_PROVIDER, "CPUExecutionProvider"]


def input_size(width: int, height: int, long_side: int) -> tuple[int, int]:
    """The network's input size for a `width` x `height` picture: the long side scaled to
    `long_side`, both sides rounded to multiples of 32 (at least 32), as the network needs."""
    scale = long_side / max(width, height)
    return max(32, round(width * scale / 32) * 32), max(32, round(height * scale / 32) * 32)


@dataclass
class TextDetector:
    """The loaded network. Call it on a batch of same-size RGB frames; `boxes` reads one output map."""

    session: object  # onnxruntime.InferenceSession
    input_name: str
    provider: str  # the execution provider that runs it

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """Text probability maps (N, H, W) float32 for uint8 RGB frames (N, H, W, 3), H and W
        multiples of 32: one session.run for the whole batch."""
        bgr = frames[..., ::-1].transpose(0, 3, 1, 2)  # the network was trained on OpenCV's BGR
        pixels = bgr.astype(np.float32) * np.float32(2 / 255) - np.float32(1)  # (x / 255 - 0.5) / 0.5
        return self.session.run(None, {self.input_name: np.ascontiguousarray(pixels)})[0][:, 0]


def load_text_detector(weights: str = "", device: str = "auto", threads: int = 1) -> TextDetector:
    """Load the network once (per worker). `threads`: onnxruntime's intra-op threads; local runs
    start a worker per core, so one each keeps the cores busy without oversubscribing them."""
    path = model_path(weights)
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: its warnings would print over the progress bar
    chosen = providers(device)
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=chosen)
    except Exception as exc:  # a corrupt or foreign file, or a CUDA provider without a usable GPU
        if device == "auto" and chosen[0] == CUDA_PROVIDER:  # e.g. a Ray task that was given no GPU
            return load_text_detector(weights, "cpu", threads)
        raise ModelUnavailable(f"text detector: cannot load {path} ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    return TextDetector(session, session.get_inputs()[0].name, session.get_providers()[0])


def boxes(probability: np.ndarray) -> np.ndarray:
    """Text boxes in one probability map (H, W): float32 rows (x0, y0, x1, y1, score), corners as
    shares of the map's width and height (so of the picture's), in [0, 1].

    Axis-aligned boxes: connected regions of the thresholded (and 2x2-dilated, as rapidocr does)
    map no taller than a text line can be, scored by the mean probability over their bounding box,
    grown by the unclip distance."""
    height, width = probability.shape
    mask = cv2.dilate((probability > BINARY_THRESHOLD).astype(np.uint8), np.ones((2, 2), np.uint8))
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count <= 1:
        return np.zeros((0, 5), np.float32)
    x, y, w, h = (stats[1:, i].astype(np.float64) for i in (cv2.CC_STAT_LEFT, cv2.CC_STAT_TOP, cv2.CC_STAT_WIDTH, cv2.CC_STAT_HEIGHT))
    integral = cv2.integral(probability.astype(np.float64))
    x1, y1 = (x + w).astype(int), (y + h).astype(int)
    x0, y0 = x.astype(int), y.astype(int)
    score = (integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]) / (w * h)
    keep = (np.minimum(w, h) >= MIN_SIDE_PX) & (h <= MAX_LINE_HEIGHT * height) & (score >= BOX_THRESHOLD)
    x, y, w, h, score = x[keep], y[keep], w[keep], h[keep], score[keep]
    grow = w * h * UNCLIP_RATIO / (2 * (w + h))  # a rectangle's area * ratio / perimeter
    out = np.stack(
        [
            np.clip((x - grow) / width, 0, 1),
            np.clip((y - grow) / height, 0, 1),
            np.clip((x + w + grow) / width, 0, 1),
            np.clip((y + h + grow) / height, 0, 1),
            score,
        ],
        axis=1,
    )
    return out.astype(np.float32)
