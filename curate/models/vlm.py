"""The captioning model: any transformers vision-language model that takes video, behind one wrapper.

`load_captioner` gives a `Captioner` for `caption.model`: a Hugging Face model id (found in the
local cache under HF_HOME, or downloaded once when the hub answers), a local folder, or `tiny`
(a random SmolVLM2 built offline, `curate.models.tiny_vlm`). The model loads through
`AutoModelForImageTextToText` and `AutoProcessor`, so SmolVLM2, Qwen2.5-VL, LLaVA-OneVision and
others need no code of their own: each clip goes into the model's own chat template as one
{"type": "video"} part holding the frames the stage decoded (the processor is told not to
resample them, and is given their timestamps), or as one image per frame for a processor without
video support. Left padding makes batched generation equal to one clip at a time; weights are
bf16 on CUDA (fp16 where bf16 is missing) and fp32 on the CPU.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch

from curate.config import CaptionConfig
from curate.errors import ModelUnavailable
from curate.models import hub
from curate.models.hub import hub_offline, quiet_logs, reason, resolve_device

TINY = "tiny"
# What a model folder needs for inference (the hub repos also hold ONNX exports and the like).
_MODEL_FILES = ["*.json", "*.safetensors", "*.txt", "*.jinja", "*.model", "*.tiktoken", "*.py"]
_DEFAULT_EDGE = 448  # frame size for processors that state none


@dataclass(frozen=True)
class Generated:
    """One clip's answer: the text (special tokens removed), whether the model ended it itself
    (False: cut at max_new_tokens), and how many tokens it wrote (the end token included)."""

    text: str
    finished: bool
    num_tokens: int


@dataclass(frozen=True)
class ClipFrames:
    """The sampled frames of one clip, (T, H, W, 3) uint8, with where they sit in the clip."""

    frames: np.ndarray
    frame_offsets: list[int]  # frame numbers counted from the clip's first frame
    fps: float
    num_frames: int  # the clip's length in frames


class Captioner:
    """A vision-language model and its processor on one device: clips and prompts in, text out."""

    def __init__(self, model, processor, device: torch.device, name: str):
        self.model = model.eval()
        self.processor = processor
        self.device = device
        self.name = name
        self.dtype = next(model.parameters()).dtype
        # Generation appends to the right end of every row, so padding must be on the left.
        processor.tokenizer.padding_side = "left"
        # Answers are decoded with a copy of the tokenizer: the stage builds the next batch's
        # inputs in another thread meanwhile, and a Rust tokenizer used from two threads at once
        # fails with "Already borrowed" (encoding with padding mutates it).
        self.decoder = copy.deepcopy(processor.tokenizer)
        self.takes_video = getattr(processor, "video_processor", None) is not None
        eos = model.generation_config.eos_token_id
        self.end_ids = {eos} if isinstance(eos, int) else set(eos or [])
        if processor.tokenizer.eos_token_id is not None:
            self.end_ids.add(processor.tokenizer.eos_token_id)

    def frame_size(self, width: int, height: int, max_edge: int = 0) -> tuple[int, int]:
        """The size to decode a width x height video at: the model's input size (`max_edge`
        overrides it), keeping the aspect ratio, never larger than the video. The processor
        still does its own final resize; decoding near that size saves it most of the work."""
        edge, max_pixels = max_edge, 0
        if not edge:
            edge, max_pixels = _processor_size(getattr(self.processor, "video_processor", None) or self.processor.image_processor)
        scale = min(1.0, edge / max(width, height)) if edge else 1.0
        if max_pixels:
            scale = min(scale, math.sqrt(max_pixels / (width * height)))
        return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)

    def inputs(self, clips: list[ClipFrames], prompts: list[str]):
        """Model inputs (a BatchFeature of CPU tensors) for a batch of clips, one chat each."""
        if self.takes_video:
            parts = [[{"type": "video", "video": clip.frames}] for clip in clips]
            kwargs = {"do_sample_frames": False, "video_metadata": [_metadata(clip) for clip in clips]}
        else:  # an image model: one image per frame, in order
            parts = [[{"type": "image", "image": frame} for frame in clip.frames] for clip in clips]
            kwargs = {}
        conversations = [
            [{"role": "user", "content": [*content, {"type": "text", "text": prompt}]}]
            for content, prompt in zip(parts, prompts, strict=True)
        ]
        return self.processor.apply_chat_template(
            conversations,
            # The processor's own template, passed explicitly: SmolVLMProcessor otherwise swaps in
            # a built-in one whenever a message holds a video.
            chat_template=self.processor.chat_template,
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
            processor_kwargs={"padding": True, **kwargs},
        )

    @torch.inference_mode()
    def generate(self, inputs, settings: dict) -> list[Generated]:
        """Generate for a batch built by `inputs`; `settings` are `generate` keyword arguments
        (they override the model's generation config only where they name a value)."""
        inputs = inputs.to(self.device, non_blocking=True)
        # Only the pixels take the model's dtype: other floating inputs are not activations, and
        # Qwen2.5-VL's second_per_grid_ts (seconds per frame pair) would place frames off by a
        # position in bf16.
        pixels = {key: value.to(self.dtype) for key, value in inputs.items() if "pixel_values" in key}
        output = self.model.generate(**{**inputs, **pixels}, **settings)
        new_tokens = output[:, inputs["input_ids"].shape[1] :].cpu()
        texts = self.decoder.batch_decode(new_tokens, skip_special_tokens=True)
        return [self._result(text, row) for text, row in zip(texts, new_tokens.tolist(), strict=True)]

    def _result(self, text: str, tokens: list[int]) -> Generated:
        ends = [i for i, token in enumerate(tokens) if token in self.end_ids]
        if ends:
            return Generated(text, True, ends[0] + 1)
        return Generated(text, False, len(tokens))


def _metadata(clip: ClipFrames) -> dict:
    """What the processor needs to write each frame's timestamp into the prompt."""
    return {
        "total_num_frames": clip.num_frames,
        "fps": clip.fps,
        "duration": clip.num_frames / clip.fps,
        "frames_indices": list(clip.frame_offsets),
    }


def _processor_size(processor) -> tuple[int, int]:
    """(longest edge, most pixels) that `processor` resizes frames to; 0 where it sets none."""
    size = getattr(processor, "size", None) or {}
    size = dict(size) if not isinstance(size, dict) else size
    # The Qwen2-VL family (frames patched in pairs over time) counts pixels in `size`:
    # longest_edge is the most pixels per frame, not an edge.
    if getattr(processor, "temporal_patch_size", None) and size.get("longest_edge"):
        return 0, int(size["longest_edge"])
    largest = getattr(processor, "max_image_size", None)  # SmolVLM: frames end as squares of this edge
    if isinstance(largest, dict) and largest.get("longest_edge"):
        return int(largest["longest_edge"]), 0
    max_pixels = getattr(processor, "max_pixels", None)  # e.g. MiniMax-M3-VL: a pixel budget per frame
    if max_pixels:
        return 0, int(max_pixels)
    if size.get("longest_edge"):
        return int(size["longest_edge"]), 0
    if size.get("height") and size.get("width"):
        return int(max(size["height"], size["width"])), 0
    if size.get("shortest_edge"):
        return int(size["shortest_edge"] * 2), 0  # the long side of a 2:1 frame at that short side
    return _DEFAULT_EDGE, 0


# -- loading --------------------------------------------------------------------------------


def load_captioner(config: CaptionConfig) -> Captioner:
    """Build the model `config` names on its device (once per worker)."""
    device = resolve_device(config.device, "caption.device")
    if config.model == TINY:
        from curate.models.tiny_vlm import build_tiny_smolvlm

        model, processor = build_tiny_smolvlm()
        return Captioner(model.to(device), processor, device, TINY)
    folder = fetch_model(config.model)
    from transformers import AutoModelForImageTextToText, AutoProcessor

    dtype = torch.float32
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    try:
        with hub_offline(), quiet_logs():  # everything is local by now: never wait on the network
            processor = AutoProcessor.from_pretrained(folder)
            model = AutoModelForImageTextToText.from_pretrained(folder, dtype=dtype)
    except Exception as exc:
        raise ModelUnavailable(f"cannot load captioning model {config.model}: {reason(exc)} (caption.model)") from None
    return Captioner(model.to(device), processor, device, config.model)


def fetch_model(model: str) -> str:
    """The local folder holding `model` (a folder, or a hub id found in the cache or downloaded
    when the hub answers); a miss is one ModelUnavailable line saying how to provide it."""
    if model == TINY:
        return TINY
    return hub.fetch_snapshot(model, _MODEL_FILES, "captioning model", "--set caption.model=/path/to/model_folder")
