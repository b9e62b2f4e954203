"""Pack stage, first half: re-encode every kept clip of one video into a small mp4.

Unit: every kept clip of one video. The video is opened once and only the clips' frames are
decoded (`iter_spans` seeks to the keyframe before each distant clip); each clip's frames
(exactly `start_frame` to `end_frame`, or the ones `pack.fps` picks from them) stream into its own
`ClipEncoder`. The unit stores the mp4 bytes ("samples") and what they hold ("scores"). Grouping
samples into tar shards, with their captions and manifest rows, is `finish` (`curate.packing`):
it needs every unit, and must follow caption or threshold changes without re-encoding anything.
"""

from __future__ import annotations

from collections import Counter

import av
import pyarrow as pa

from curate.config import PackConfig
from curate.encoding import ClipEncoder, output_frames
from curate.manifest import to_table
from curate.shards import sample_key
from curate.stages.base import Unit
from curate.stages.clipstage import UNIT_SIZES, ClipRef, ClipStage
from curate.videoio import DecodeLog, VideoError, iter_spans, open_video

SAMPLES_SCHEMA = pa.schema([("key", pa.string()), ("mp4", pa.binary())])


class PackStage(ClipStage):
    """Encodes clips; the runner writes them into shards."""

    name = "pack"
    clips_per_unit = UNIT_SIZES["pack"]
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
            "scores": to_table([{"clip_id": c.clip_id, **r} for c, r in zip(clips, rows, strict=True)], self.schema),
            "samples": to_table(samples, SAMPLES_SCHEMA),
        }
        return tables, {"clips": len(clips), "frames": sum(c.num_frames for c in clips)}

    def finish(self, layout, work_dir, progress: bool):
        """The second half: the encoded samples into shards; each packed clip's `shard`."""
        from curate.packing import write_shards

        return write_shards(layout, self.config, work_dir, progress)

    def failed(self, unit: Unit, message: str) -> tuple[dict, dict]:
        tables, stats = super().failed(unit, message)
        return {**tables, "samples": SAMPLES_SCHEMA.empty_table()}, stats

    def _encode(self, clips: list[ClipRef]) -> tuple[list[dict], list[dict]]:
        """One row per clip (what was encoded, or `pack_error`), and the encoded samples."""
        try:
            container, stream, info = open_video(clips[0].path)
        except VideoError as exc:
            return [{self.error_column: str(exc)} for _ in clips], []
        log = DecodeLog()
        encoders: dict[int, ClipEncoder] = {}
        unencodable: dict[int, str] = {}  # clip index -> why its frames could not be encoded
        wanted = [Counter(output_frames(c.num_frames, c.fps, self.config.fps)) for c in clips]
        fed = Counter()  # frames read per clip, to know each frame's offset in its clip
        try:
            for index, frame in iter_spans(container, stream, [c.span for c in clips], clips[0].fps or info.fps, log):
                offset = fed[index]
                fed[index] += 1
                if index not in unencodable:
                    self._feed(encoders, unencodable, index, clips[index], frame, wanted[index][offset])
        except av.FFmpegError as exc:  # a file that cannot even be seeked: keep what was read
            log.note(f"reading stopped ({exc})")
        finally:
            container.close()
        return self._finish(clips, encoders, unencodable, fed, log)

    def _feed(self, encoders, unencodable, index: int, clip: ClipRef, frame: av.VideoFrame, copies: int) -> None:
        """Encode `frame` `copies` times (0: dropped, 2+: repeated, to reach pack.fps) into the
        clip's encoder; a clip whose frame the encoder refuses is marked, not the whole video."""
        try:
            if index not in encoders:
                encoders[index] = self._encoder(clip, frame)
            for _ in range(copies):
                encoders[index].add(frame)
        except (av.FFmpegError, ValueError) as exc:
            unencodable[index] = f"cannot encode the clip ({exc})"
            if index in encoders:
                encoders.pop(index).abort()

    def _encoder(self, clip: ClipRef, frame: av.VideoFrame) -> ClipEncoder:
        fps = self.config.fps or clip.fps
        config = self.config
        return ClipEncoder((frame.width, frame.height), fps, config.short_side, config.crop, config.crf, config.preset, config.encode_threads)

    def _finish(self, clips: list[ClipRef], encoders: dict[int, ClipEncoder], unencodable: dict[int, str], fed: Counter, log: DecodeLog):
        rows, samples = [], []
        why = f" ({log.first_problem})" if log.first_problem else ""
        for index, clip in enumerate(clips):
            encoder = encoders.get(index)
            if index in unencodable:
                rows.append({self.error_column: unencodable[index]})
                continue
            if fed[index] != clip.num_frames:  # a clip is packed whole or not at all
                if encoder is not None:
                    encoder.abort()
                rows.append({self.error_column: f"{fed[index]} of {clip.num_frames} frames decoded{why}"})
                continue
            mp4 = encoder.finish()
            key = sample_key(clip.clip_id)
            samples.append({"key": key, "mp4": mp4})
            rows.append({
                "key": key, "pack_width": encoder.width, "pack_height": encoder.height,
                "pack_fps": self.config.fps or clip.fps, "pack_num_frames": encoder.num_frames, "pack_mp4_bytes": len(mp4),
            })  # fmt: skip
        return rows, samples

