"""Text stage: how much burned-in text (subtitles, titles, tickers, logos) each kept clip carries.

Unit: up to 32 clips, possibly of several videos. A few frames per clip (`text.frames`, or
`text.frames_per_s`) are decoded by the shared frame pool, each video opened once, and FFmpeg
converts each straight to the detector's input size (upright RGB, long side `text.long_side`).
The main thread runs PP-OCRv4's text detector on batches of same-size frames while the pool
decodes the next ones; `curate.stages.text.overlay` then tells the clip's overlay text from its
scene text. The stage stores measurements only: `text.max_area` (and `text.crop`) decide drops.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from curate.config import TextConfig
from curate.devices import visible_ids
from curate.framepool import count_at_rate, decode_frames, frame_indices, uniform_positions
from curate.manifest import ClipRef
from curate.models.text_detector import TextDetector, boxes, input_size, load_text_detector, model_path, providers
from curate.stages.clipstage import ClipStage
from curate.stages.text.overlay import ClipText, FrameText, classify, frame_text


class TextStage(ClipStage):
    """Overlay and scene text measured on sampled frames of every clip."""

    name = "text"
    columns = pa.schema(
        [
            ("text_area", pa.float32()),
            ("text_scene_area", pa.float32()),
            ("text_boxes", pa.int32()),
            ("text_band_top", pa.float32()),
            ("text_band_bottom", pa.float32()),
            ("text_mid_area", pa.float32()),
            ("text_regions", pa.list_(pa.list_(pa.float32(), 4))),
        ]
    )

    def __init__(self, config: TextConfig):
        self.config = config
        self.detector: TextDetector | None = None

    def prepare(self) -> None:
        model_path(self.config.weights)  # a missing model fails here, in one line, before any worker starts
        providers(self.config.device)

    def setup(self) -> None:
        if self.detector is None:
            self.detector = load_text_detector(self.config.weights, self.config.device, self.config.threads)

    def gpu_ids(self) -> list[str]:
        """With onnxruntime's CUDA provider, the GPUs the workers share out, one each (round-robin);
        without it none: the detector runs on the CPU."""
        if self.config.device == "cpu" or providers(self.config.device)[0] == "CPUExecutionProvider":
            return []
        import torch  # counts GPUs through NVML, leaving CUDA uninitialised in this process

        return visible_ids(torch.cuda.device_count())

    def score(self, clips: list[ClipRef]) -> list[dict]:
        self.setup()
        assert self.detector is not None
        wanted = [frame_indices(clip, self.positions(clip)) for clip in clips]
        batcher = _Batcher(self.detector, self.config.batch_size)
        errors: dict[int, str] = {}
        events = decode_frames(clips, wanted, self.to_input, self.config.decode_threads, 2 * self.config.batch_size)
        for event in events:
            if event[0] == "frame":
                batcher.add((event[1], event[2]), event[3])
            else:
                errors.setdefault(event[1], event[2])
        batcher.flush()
        rows = []
        for clip_no, indices in enumerate(wanted):
            if clip_no in errors:
                rows.append({self.error_column: errors[clip_no]})
                continue
            frames = [batcher.results[(clip_no, index)] for index in sorted(set(indices))]
            rows.append(_columns(classify(frames, self.config.band)))
        return rows

    def positions(self, clip: ClipRef) -> list[float]:
        """Where frames are taken, as fractions of the clip: `frames` of them, or `frames_per_s`."""
        if self.config.frames_per_s <= 0:
            return uniform_positions(self.config.frames)
        return uniform_positions(count_at_rate(clip, self.config.frames_per_s, 2, self.config.max_frames))

    def to_input(self, frame, upright) -> np.ndarray:
        """The frame as the detector's input: upright RGB at its input size (FFmpeg scales once)."""
        width, height = input_size(*upright.display_size(frame), self.config.long_side)
        return upright.rgb(frame, width, height, "BILINEAR")


def _columns(text: ClipText) -> dict:
    return {
        "text_area": text.area,
        "text_scene_area": text.scene_area,
        "text_boxes": text.boxes,
        "text_band_top": text.band_top,
        "text_band_bottom": text.band_bottom,
        "text_mid_area": text.mid_area,
        "text_regions": text.shown,
    }


class _Batcher:
    """Collects frames by input size and runs the detector once per `batch_size` frames of a size."""

    def __init__(self, detector: TextDetector, batch_size: int):
        self.detector, self.batch_size = detector, batch_size
        self.waiting: dict[tuple[int, ...], list[tuple[tuple[int, int], np.ndarray]]] = {}
        self.results: dict[tuple[int, int], FrameText] = {}  # (clip_no, frame index) -> what was found

    def add(self, key: tuple[int, int], pixels: np.ndarray) -> None:
        group = self.waiting.setdefault(pixels.shape, [])
        group.append((key, pixels))
        if len(group) >= self.batch_size:
            self._run(self.waiting.pop(pixels.shape))

    def flush(self) -> None:
        for shape in list(self.waiting):
            self._run(self.waiting.pop(shape))

    def _run(self, group: list[tuple[tuple[int, int], np.ndarray]]) -> None:
        maps = self.detector(np.stack([pixels for _, pixels in group]))
        for (key, pixels), probability in zip(group, maps, strict=True):
            self.results[key] = frame_text(boxes(probability), pixels)
