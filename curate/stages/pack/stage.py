"""Pack stage, first half: re-encode every kept clip of one video into a small mp4.

Unit: kept clips of one video, at most `units.max_clips` of its row in `curate.pipeline` (a long film becomes several
units, so a unit's encoded bytes stay small and its clips spread over the workers). The video is
opened once per unit and only the clips' frames are decoded (`iter_spans` seeks to the keyframe
before each distant clip); each clip's frames (exactly `start_frame` to `end_frame`), with their
timestamps, stream into its own `ClipEncoder`, which picks the frames of `pack.fps` by time. The unit
stores the mp4 bytes ("samples") and what they hold ("scores"). Grouping samples into tar shards, with
their captions and manifest rows, is `finish` (`curate.stages.pack.writer`): it needs every unit, and
must follow caption or threshold changes without re-encoding anything.
"""

from __future__ import annotations

from collections import Counter

import av
import pyarrow as pa

from curate.config import PackConfig
from curate.manifest import ClipRef, to_table
from curate.picture import Box, picture_of
from curate.shards import sample_key
from curate.stages.base import Unit
from curate.stages.clipstage import ClipStage
from curate.stages.pack.encoding import ClipEncoder, Encoded
from curate.stages.pack.writer import write_shards
from curate.videoio import DecodeLog, VideoError, iter_spans, open_video

SAMPLES_SCHEMA = pa.schema([("key", pa.string()), ("mp4", pa.binary())])


class PackStage(ClipStage):
    """Encodes clips; the runner writes them into shards."""

    name = "pack"
    columns = pa.schema(
        [
            ("key", pa.string()),
            ("pack_width", pa.int32()),
            ("pack_height", pa.int32()),
            ("pack_fps", pa.float64()),
            ("pack_num_frames", pa.int32()),
            ("pack_mp4_bytes", pa.int64()),
        ]
    )

    def __init__(self, config: PackConfig):
        self.config = config

    def process(self, unit: Unit) -> tuple[dict, dict]:
        clips: list[ClipRef] = unit.payload
        rows, samples = self._encode(clips)
        tables = {
            "scores": self.scores_table(clips, rows),
            "samples": to_table(samples, SAMPLES_SCHEMA),
        }
        return tables, {"clips": len(clips), "frames": sum(c.num_frames for c in clips)}

    def finish(self, layout, work_dir, done: set[str], progress: bool):
        """The second half: the encoded samples into shards; each packed clip's `shard`."""
        return write_shards(layout, self.config, work_dir, done, progress)

    def failed(self, unit: Unit, message: str) -> tuple[dict, dict]:
        tables, stats = super().failed(unit, message)
        return {**tables, "samples": SAMPLES_SCHEMA.empty_table()}, stats

    def _encode(self, clips: list[ClipRef]) -> tuple[list[dict], list[dict]]:
        """One row per clip (what was encoded, or `pack_error`), and the encoded samples.

        Each clip's encoder is finished as soon as its last frame is in (clips do not overlap, so
        at most one is open at a time): memory does not grow with the number of clips."""
        try:
            container, stream, info = open_video(clips[0].path)
        except VideoError as exc:
            return [{self.error_column: str(exc)} for _ in clips], []
        log = DecodeLog()
        encoders: dict[int, ClipEncoder] = {}
        results: dict[int, Encoded | str] = {}  # clip index -> the encoded clip, or why it failed
        fed = Counter()  # frames read per clip
        try:
            for index, frame in iter_spans(container, stream, [c.span for c in clips], clips[0].fps or info.fps, log):
                fed[index] += 1
                if index not in results:
                    self._feed(encoders, results, clips[index], index, stream, frame, log.frame_times_s[-1], fed[index])
        except av.FFmpegError as exc:  # a file that cannot even be seeked: keep what was read
            log.note(f"reading stopped ({exc})")
        finally:
            container.close()
            for encoder in encoders.values():  # clips whose frames did not all come
                encoder.abort()
        return self._rows(clips, results, fed, log)

    def _feed(self, encoders, results, clip: ClipRef, index: int, stream, frame: av.VideoFrame, time_s: float, fed: int) -> None:
        """Encode the clip's next frame (shown from `time_s`, seconds in the source); finish the
        clip after its last one. A frame the encoder refuses fails its clip, not the video."""
        try:
            if index not in encoders:
                encoders[index] = self._encoder(clip, stream, frame)
            encoders[index].add(frame, time_s - clip.start_s)
            if fed == clip.num_frames:
                results[index] = encoders.pop(index).finish()
        except (av.FFmpegError, ValueError) as exc:
            results[index] = f"cannot encode the clip ({exc})"
            if index in encoders:
                encoders.pop(index).abort()

    def _encoder(self, clip: ClipRef, stream, frame: av.VideoFrame) -> ClipEncoder:
        """The clip's encoder: its crop box (black borders off) first, then `pack.short_side` or the
        `pack.crop_width` x `pack.crop_height` centre crop of what is left."""
        config, picture = self.config, picture_of(stream, frame)
        box = picture.coded_box(Box(*clip.box), frame.width, frame.height, even=True) if clip.box else None
        return ClipEncoder(
            picture, (frame.width, frame.height), clip.end_s - clip.start_s, config.fps or clip.fps, clip.fps,
            config.short_side, config.crop, config.crf, config.preset, config.encode_threads, box,
        )  # fmt: skip

    def _rows(self, clips: list[ClipRef], results: dict, fed: Counter, log: DecodeLog) -> tuple[list[dict], list[dict]]:
        rows, samples = [], []
        why = f" ({log.first_problem})" if log.first_problem else ""
        for index, clip in enumerate(clips):
            result = results.get(index)
            if isinstance(result, str):
                rows.append({self.error_column: result})
            elif result is None:  # a clip is packed whole or not at all
                rows.append({self.error_column: f"{fed[index]} of {clip.num_frames} frames decoded{why}"})
            else:
                key = sample_key(clip.clip_id, clip.box_id)
                samples.append({"key": key, "mp4": result.mp4})
                rows.append({
                    "key": key, "pack_width": result.width, "pack_height": result.height,
                    "pack_fps": self.config.fps or clip.fps, "pack_num_frames": result.num_frames, "pack_mp4_bytes": len(result.mp4),
                })  # fmt: skip
        return rows, samples
