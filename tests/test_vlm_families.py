"""A second model family through the captioning wrapper: a tiny random Qwen2.5-VL (the GPU preset
`Qwen/Qwen2.5-VL-7B-Instruct` at toy sizes), built offline from the real transformers classes, takes
each clip as a video, generates with consistent bookkeeping, batches with left padding like one
clip at a time, and gets frames decoded at its own pixel budget."""

import math

import numpy as np
import pytest
import torch

from curate.models.vlm import Captioner, ClipFrames, Generated

# Qwen2-VL's tokenizer specials that the processor, the chat template and the model configs use.
PAD, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD = "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"
SPECIAL_TOKENS = [PAD, IM_START, IM_END, VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD]

PATCH, MERGE, TEMPORAL_PATCH = 14, 2, 2  # as in Qwen2.5-VL-7B: 28-pixel cells of 2 frames become one token
MIN_PIXELS, MAX_PIXELS = 56 * 56, 28 * 28 * 16  # per frame: at most 16 tokens per frame pair
FPS = 10.0

# A chat template rendering the layout Qwen2.5-VL-Instruct uses (default system message, one
# <|vision_start|><|video_pad|><|vision_end|> per video), written for these tests.
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_qwen2_5_vl(seed: int = 0, dtype: torch.dtype = torch.float32):
    """(model, processor): a random two-layer Qwen2_5_VLForConditionalGeneration behind a one-block
    vision tower, and a Qwen2_5_VLProcessor whose Qwen2Tokenizer knows the 256 byte symbols (no
    merges) and Qwen's special tokens. Nothing is downloaded."""
    from tokenizers import pre_tokenizers
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2Tokenizer,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    symbols = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {token: i for i, token in enumerate(symbols + SPECIAL_TOKENS)}
    tokenizer = Qwen2Tokenizer(
        vocab=vocab, merges=[], unk_token=None, eos_token=IM_END, pad_token=PAD, extra_special_tokens=SPECIAL_TOKENS[1:]
    )
    pixels = {"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS}  # pixel counts, as Qwen's processors use them
    patches = {"patch_size": PATCH, "merge_size": MERGE, "temporal_patch_size": TEMPORAL_PATCH}
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(size=pixels, **patches),
        video_processor=Qwen2VLVideoProcessor(size=pixels, **patches),
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
    )
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 1024,
        # head_dim 16: its 8 rotary frequencies split over time, height and width.
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
        "bos_token_id": None,
        "eos_token_id": ids[IM_END],
        "pad_token_id": ids[PAD],
    }
    vision = {
        "depth": 1,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 2,
        "out_hidden_size": 64,  # the text model's hidden size
        "patch_size": PATCH,
        "spatial_merge_size": MERGE,
        "temporal_patch_size": TEMPORAL_PATCH,
        "window_size": 56,
        "fullatt_block_indexes": [0],
        "tokens_per_second": 2,
    }
    config = Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids[IMAGE_PAD],
        video_token_id=ids[VIDEO_PAD],
        vision_start_token_id=ids[VISION_START],
        vision_end_token_id=ids[VISION_END],
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2_5_VLForConditionalGeneration(config).to(dtype)
    # Ends at <|im_end|> and pads with <|endoftext|>, as the real Instruct model does.
    model.generation_config.eos_token_id = ids[IM_END]
    model.generation_config.pad_token_id = ids[PAD]
    return model.eval(), processor


@pytest.fixture(scope="module")
def qwen(offline):
    model, processor = build_tiny_qwen2_5_vl()
    return Captioner(model, processor, torch.device("cpu"), "tiny-qwen")


def clip(seed: int, frames: int, height: int = 56, width: int = 84, step: int = 10) -> ClipFrames:
    """Gradients drifting frame to frame (different per seed), sampled every `step` frames of a clip."""
    y, x = np.mgrid[0:height, 0:width]
    pixels = [
        np.stack([(x * (1 + seed) + y * 2 + t * 16) % 256, (y * (3 + seed) + t * 8) % 256, (x + y + seed * 40) % 256], -1)
        for t in range(frames)
    ]
    return ClipFrames(np.asarray(pixels, dtype=np.uint8), list(range(0, frames * step, step)), FPS, frames * step)


def new_tokens(qwen: Captioner, clips: list[ClipFrames], prompts: list[str], count: int = 6) -> torch.Tensor:
    """Greedy new tokens (batch, count): exactly `count` each, so rows compare position by position."""
    inputs = qwen.inputs(clips, prompts)
    with torch.inference_mode():
        out = qwen.model.generate(**inputs, max_new_tokens=count, min_new_tokens=count, do_sample=False)
    return out[:, inputs["input_ids"].shape[1] :]


def test_clips_go_in_as_videos(qwen):
    clips = [clip(0, frames=4), clip(1, frames=5, height=84, width=56)]
    inputs = qwen.inputs(clips, ["Describe this video.", "Write a short caption for the video."])
    assert "pixel_values" not in inputs and "image_grid_thw" not in inputs  # not one image per frame
    # Every frame kept at its size (56x84 is within the budget: 4x6 patches); an odd count is padded
    # with a copy of the last frame to fill the last pair.
    assert inputs["video_grid_thw"].tolist() == [[2, 4, 6], [3, 6, 4]]
    assert inputs["pixel_values_videos"].shape == ((2 + 3) * 4 * 6, 3 * TEMPORAL_PATCH * PATCH * PATCH)
    tokens = {name: (inputs["input_ids"] == qwen.processor.tokenizer.convert_tokens_to_ids(name)).sum(1).tolist()
              for name in (VIDEO_PAD, IMAGE_PAD, VISION_START, VISION_END)}  # fmt: skip
    assert tokens == {VIDEO_PAD: [12, 18], IMAGE_PAD: [0, 0], VISION_START: [1, 1], VISION_END: [1, 1]}
    # The frames' timing reached the processor: a pair spans two sampling steps of 10 frames at 10 fps.
    assert inputs["second_per_grid_ts"].tolist() == pytest.approx([2.0, 2.0])
    text = qwen.processor.tokenizer.decode(inputs["input_ids"][0], skip_special_tokens=False)
    assert text.endswith(f"{IM_START}user\n{VISION_START}{VIDEO_PAD * 12}{VISION_END}Describe this video.{IM_END}\n{IM_START}assistant\n")


def test_generate_bookkeeping(qwen):
    clips, prompts = [clip(2, frames=4), clip(3, frames=6)], ["Describe.", "What is happening in this clip?"]
    inputs = qwen.inputs(clips, prompts)
    # Cut at max_new_tokens: not finished, every token counted, the text is what the tokens decode to.
    cut = qwen.generate(inputs, {"max_new_tokens": 6, "min_new_tokens": 6, "do_sample": False})
    tokens = new_tokens(qwen, clips, prompts)
    expected = qwen.processor.batch_decode(tokens, skip_special_tokens=True)
    assert cut == [Generated(text, False, 6) for text in expected]
    # <|im_end|> made the likeliest token once allowed (after 3 tokens): finished, the end token
    # counted, not in the text.
    end = qwen.processor.tokenizer.convert_tokens_to_ids(IM_END)
    settings = {"max_new_tokens": 6, "min_new_tokens": 3, "do_sample": False, "sequence_bias": {(end,): 100.0}}
    ended = qwen.generate(inputs, settings)
    heads = qwen.processor.batch_decode(tokens[:, :3], skip_special_tokens=True)
    assert ended == [Generated(text, True, 4) for text in heads]


def test_left_padded_batch_matches_one_by_one(qwen):
    clips = [clip(4, frames=4), clip(5, frames=6, height=84, width=56)]
    # Videos and prompts of different lengths, so the shorter row is padded.
    prompts = ["Describe this video.", "Write a short caption for the video in one sentence, please."]
    inputs = qwen.inputs(clips, prompts)
    assert inputs["attention_mask"][0, 0] == 0 and inputs["attention_mask"][:, -1].all()  # padded on the left
    batched = new_tokens(qwen, clips, prompts)
    for row, (one_clip, prompt) in enumerate(zip(clips, prompts, strict=True)):
        assert torch.equal(batched[row], new_tokens(qwen, [one_clip], [prompt])[0])


def test_frame_size_follows_the_pixel_budget(qwen):
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import smart_resize

    width, height = qwen.frame_size(1280, 720)
    scale = math.sqrt(MAX_PIXELS / (1280 * 720))
    # The budget met (up to rounding to even sizes), the 16:9 shape kept.
    assert abs(width - 1280 * scale) <= 1 and abs(height - 720 * scale) <= 1
    # Decoding that small costs the model nothing: its own resize leaves at least as many patches.
    ours = smart_resize(height, width, PATCH * MERGE, MIN_PIXELS, MAX_PIXELS)
    full = smart_resize(720, 1280, PATCH * MERGE, MIN_PIXELS, MAX_PIXELS)
    assert ours[0] * ours[1] >= full[0] * full[1]
    assert qwen.frame_size(64, 48) == (64, 48)  # within the budget: never upscaled
    assert qwen.frame_size(1280, 720, max_edge=320) == (320, 180)  # caption.frame_max_edge overrides


def test_bf16_model_gets_bf16_pixels_and_fp32_timing(offline):
    """Only pixels take the model's dtype: frame timing cast to bf16 would shift video positions."""
    model, processor = build_tiny_qwen2_5_vl(dtype=torch.bfloat16)
    qwen = Captioner(model, processor, torch.device("cpu"), "tiny-qwen-bf16")
    seen = {}
    generate = model.generate

    def spy(**kwargs):
        seen.update(kwargs)
        return generate(**kwargs)

    model.generate = spy
    # 3 of a 10-frame clip at 7 fps: 2 / 2.1 seconds per frame pair, which bf16 cannot hold.
    frames = ClipFrames(clip(6, frames=3).frames, [0, 4, 8], 7.0, 10)
    (answer,) = qwen.generate(qwen.inputs([frames], ["Describe."]), {"max_new_tokens": 2, "min_new_tokens": 2})
    assert answer.num_tokens == 2
    assert seen["pixel_values_videos"].dtype == torch.bfloat16
    assert seen["second_per_grid_ts"].dtype == torch.float32
    assert seen["second_per_grid_ts"].tolist() == pytest.approx([2 / 2.1])
