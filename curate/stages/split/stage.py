"""Split stage: decode each video once, find its shot boundaries, and cut its shots into clips.

Unit: one input video. Outputs: one `videos` row (probe results, `cut_frames`, or the error that
stopped it) and its `clips` rows (`video.split_video` does the work).

`split.detector` picks the boundaries: ours (`shots.py`), TransNetV2 (`transnet.py`), or both
joined (`transnet.ensemble`). Every frame is decoded once; the learned detector reads a 48x27 RGB
copy of the same decoded frame, and its per-frame probabilities become a `transitions` table.

This module is what the command's own process imports to hand the stage to its workers, so it
imports nothing heavy: PyAV, numpy, OpenCV and torch load in the workers (the fork server imports
all but torch once, `StageSpec.worker_modules`).
"""

from __future__ import annotations

from curate.config import SplitConfig
from curate.inputs import VideoInput
from curate.manifest import CLIP_SCHEMA, VIDEO_SCHEMA, to_table
from curate.stages.base import Stage, Unit


class SplitStage(Stage):
    """Shot detection and clip shaping for one video per unit."""

    name = "split"
    # One row per video: TransNetV2's per-frame probabilities, so thresholds can be re-tuned. Only a
    # learned detector writes it; after a heuristic split manifests/transitions/ is emptied.
    extra_tables = ("transitions",)

    def __init__(self, config: SplitConfig):
        self.config = config
        self._model = None  # TransNetV2, loaded once per worker when the detector uses it

    @property
    def _learned(self) -> bool:
        return self.config.detector != "heuristic"

    @property
    def loads_model(self) -> bool:
        """With a learned detector, setting up loads TransNetV2: a cluster keeps long-lived workers
        (Ray actors) that load it once, where tasks would load it again for each video."""
        return self._learned

    def prepare(self) -> None:
        if self._learned:  # a missing package, or a CUDA device that is not there, fails here in one line
            from curate.models.hub import resolve_device  # torch loads only for a learned detector
            from curate.stages.split import transnet

            transnet.weights_path()
            resolve_device(self.config.transnet_device, "split.transnet_device")

    def setup(self) -> None:
        # One video per worker and core: OpenCV's own threads (the frame-quality samples) would
        # only fight the other workers for the cores, at twice the CPU time per sample. OpenCV
        # loads in workers only (the fork server's preload): the command's process never needs it.
        import cv2

        cv2.setNumThreads(1)
        if self._learned and self._model is None:
            from curate.stages.split import transnet

            self._model = transnet.TransNet(self.config.transnet_device, self.config.transnet_batch_windows)

    def process(self, unit: Unit) -> tuple[dict, dict]:
        # PyAV, numpy and the detectors: the fork server imported them before forking this worker.
        from curate.stages.split.video import split_video
        from curate.videoio import VideoError

        video: VideoInput = unit.payload
        if video.duplicate_of is not None:
            return self._error(video, f"same file as {video.duplicate_of}")
        self.setup()  # a stage used directly (benchmarks, tests) loads the model on first use
        try:
            return split_video(video, self.config, self._model if self._learned else None)
        except VideoError as exc:
            return self._error(video, str(exc), exc.info)

    def failed(self, unit: Unit, message: str) -> tuple[dict, dict]:
        return self._error(unit.payload, message)

    def _error(self, video: VideoInput, message: str, info=None) -> tuple[dict, dict]:
        row = {
            "video_id": video.video_id,
            "path": video.path,
            "status": "error",
            "error": message,
            "source_caption": video.source_caption,
            "cut_frames": [],
            "cut_kinds": [],
        }
        if info is not None:
            row.update(codec=info.codec, width=info.width, height=info.height, fps=info.fps)
        tables = {"videos": to_table([row], VIDEO_SCHEMA), "clips": to_table([], CLIP_SCHEMA)}
        return tables, {"frames": 0, "clips": 0, "status": "error"}
