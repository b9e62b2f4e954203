"""Caption stage: describe each kept clip with a video vision-language model.

Unit: up to 32 clips (possibly of several videos, sorted by video and time). For each clip,
`caption.num_frames` frames spread evenly over it are decoded by a thread pool (one video per
thread, FFmpeg resizing straight to the model's input size); a second thread turns complete
clips into batches of model inputs (chat template, processor), so decoding and preprocessing
run while the main thread generates. Generation is batched with left padding and greedy by
default, so a clip's caption does not depend on the clips batched with it.

Every answer is cleaned (`curate.stages.caption.text.clean_caption`) and checked: an empty, truncated or
looping caption is generated once more with the retry settings (a repetition penalty, no repeated
n-grams, twice the token budget). One that still fails gets `caption_error` (the filter drops it
as `caption_failed`) and its raw text in `caption_raw` for review.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import torch

from curate.config import CaptionConfig
from curate.framepool import background, decode_frames, frame_indices, uniform_positions
from curate.manifest import ClipRef
from curate.models.vlm import Captioner, ClipFrames, Generated, fetch_model, load_captioner
from curate.picture import Upright
from curate.stages.base import Unit
from curate.stages.caption.text import caption_problem, clean_caption, shorten
from curate.stages.clipstage import ModelClipStage


class CaptionStage(ModelClipStage):
    """Captions for batches of clips."""

    name = "caption"
    columns = pa.schema(
        [
            ("caption", pa.string()),
            ("caption_model", pa.string()),
            ("caption_prompt_id", pa.string()),
            ("caption_attempts", pa.int8()),
            ("caption_raw", pa.string()),  # the model's last answer, kept when the caption failed
        ]
    )

    def __init__(self, config: CaptionConfig):
        self.config = config
        self.captioner: Captioner | None = None

    def prepare(self) -> None:
        fetch_model(self.config.model)

    def setup(self) -> None:
        if self.captioner is None:
            self.captioner = load_captioner(self.config)

    def score(self, clips: list[ClipRef]) -> list[dict]:
        return self.caption(clips)[0]

    def process(self, unit: Unit) -> tuple[dict, dict]:
        clips: list[ClipRef] = unit.payload
        values, tokens = self.caption(clips)
        stats = {"clips": len(clips), "frames": sum(c.num_frames for c in clips), "tokens": tokens}
        return {"scores": self.scores_table(clips, values)}, stats

    def caption(self, clips: list[ClipRef]) -> tuple[list[dict], int]:
        """One dict of column values per clip, and the number of tokens generated."""
        self.setup()
        assert self.captioner is not None
        results: list[dict] = [{} for _ in clips]
        tokens = 0
        retry: list[tuple[int, ClipFrames]] = []
        for item in background(self._batches(clips)):
            if item[0] == "error":
                results[item[1]] = {"caption_error": item[2]}
                continue
            _, members, inputs = item
            again, used = self._attempt(members, inputs, 1, results)
            retry, tokens = retry + again, tokens + used
        for attempt in range(2, self.config.retries + 2):
            batches = [retry[i : i + self.config.batch_size] for i in range(0, len(retry), self.config.batch_size)]
            retry = []
            for batch in batches:
                inputs = self.captioner.inputs([frames for _, frames in batch], [self.prompt(clips[n]) for n, _ in batch])
                again, used = self._attempt(batch, inputs, attempt, results)
                retry, tokens = retry + again, tokens + used
        return results, tokens

    def _attempt(self, members: list[tuple[int, ClipFrames]], inputs, attempt: int, results: list[dict]) -> tuple[list, int]:
        """Generate for one batch and store the rows of the clips that are done; return the clips
        to try again (while retries are left) and the number of tokens generated."""
        assert self.captioner is not None
        if self.config.do_sample:
            torch.manual_seed(self.config.seed)  # the same batch samples the same way on every run
        answers = self.captioner.generate(inputs, self.settings(retry=attempt > 1))
        retry = []
        for (clip_no, frames), answer in zip(members, answers, strict=True):
            row = self._row(answer, attempt)
            if "caption_error" in row and attempt <= self.config.retries:
                retry.append((clip_no, frames))
            else:
                results[clip_no] = row
        return retry, sum(answer.num_tokens for answer in answers)

    def settings(self, retry: bool = False) -> dict:
        """`generate` keyword arguments for a first attempt or a retry."""
        config = self.config
        settings = {
            "max_new_tokens": config.max_new_tokens * (2 if retry else 1),
            "do_sample": config.do_sample,
            "num_beams": config.num_beams,
            "repetition_penalty": config.retry_repetition_penalty if retry else config.repetition_penalty,
        }
        if retry and config.retry_no_repeat_ngram_size:
            settings["no_repeat_ngram_size"] = config.retry_no_repeat_ngram_size
        if config.do_sample:
            settings.update(temperature=config.temperature, top_p=config.top_p)
        return settings

    def prompt(self, clip: ClipRef) -> str:
        """The instruction for `clip`: the configured prompt, plus its source caption when asked,
        cut to `max_source_caption_chars` (an input list may hold whole transcripts)."""
        if self.config.use_source_caption and clip.source_caption and clip.source_caption.strip():
            text = shorten(clip.source_caption, self.config.max_source_caption_chars)
            context = self.config.source_caption_prompt.replace("{source_caption}", text)
            return f"{self.config.prompt} {context}"
        return self.config.prompt

    @property
    def prompt_id(self) -> str:
        """A short hash of everything that makes up the prompts (stored with every caption)."""
        config = self.config
        parts = [config.prompt, config.source_caption_prompt if config.use_source_caption else ""]
        if config.use_source_caption:
            parts.append(config.max_source_caption_chars)
        return hashlib.sha1(json.dumps(parts).encode()).hexdigest()[:10]

    def _row(self, answer: Generated, attempts: int) -> dict:
        row = {"caption_model": self.config.model, "caption_prompt_id": self.prompt_id, "caption_attempts": attempts}
        caption = clean_caption(answer.text)
        problem = caption_problem(caption, answer.finished, self.config.min_words)
        if problem:
            tries = f" after {attempts} attempts" if attempts > 1 else ""
            return {**row, "caption_error": f"{problem}{tries}", "caption_raw": answer.text}
        return {**row, "caption": caption}

    # -- input pipeline (runs in a background thread) --------------------------------------------

    def _batches(self, clips: list[ClipRef]) -> Iterator[tuple]:
        """("batch", [(clip_no, ClipFrames)], model inputs) for every `batch_size` clips whose
        frames were all decoded, and ("error", clip_no, reason) for the others."""
        assert self.captioner is not None
        batch: list[tuple[int, ClipFrames]] = []
        for item in self._clip_frames(clips):
            if item[0] == "error":
                yield item
                continue
            batch.append(item[1:])
            if len(batch) == self.config.batch_size:
                yield self._inputs(clips, batch)
                batch = []
        if batch:
            yield self._inputs(clips, batch)

    def _inputs(self, clips: list[ClipRef], batch: list[tuple[int, ClipFrames]]) -> tuple:
        assert self.captioner is not None
        inputs = self.captioner.inputs([frames for _, frames in batch], [self.prompt(clips[n]) for n, _ in batch])
        return ("batch", batch, inputs)

    def _clip_frames(self, clips: list[ClipRef]) -> Iterator[tuple]:
        """("clip", clip_no, ClipFrames) as soon as a clip's frames are all decoded, in clip
        order, and ("error", clip_no, reason) for clips that cannot be read."""
        assert self.captioner is not None
        positions = uniform_positions(self.config.num_frames)
        wanted = [frame_indices(clip, positions) for clip in clips]
        pending: dict[int, dict[int, np.ndarray]] = {}
        queue_size = 2 * self.config.num_frames * self.config.batch_size
        events = decode_frames(clips, wanted, self._to_pixels, self.config.decode_threads, queue_size)
        for event in events:
            if event[0] == "error":
                pending.pop(event[1], None)
                yield event
                continue
            _, clip_no, index, pixels = event
            got = pending.setdefault(clip_no, {})
            got[index] = pixels
            if len(got) == len(set(wanted[clip_no])):
                del pending[clip_no]
                clip = clips[clip_no]
                frames = np.stack([got[i] for i in wanted[clip_no]])
                offsets = [i - clip.start_frame for i in wanted[clip_no]]
                yield ("clip", clip_no, ClipFrames(frames, offsets, clip.fps, clip.num_frames))

    def _to_pixels(self, frame, upright: Upright) -> np.ndarray:
        """A decoded frame as RGB pixels at the size the model wants, as a player shows it
        (FFmpeg converts and resizes in one call; `upright` is the stream's converter)."""
        assert self.captioner is not None
        width, height = self.captioner.frame_size(*upright.display_size(frame), self.config.frame_max_edge)
        return upright.rgb(frame, width, height)
