"""The tiny SmolVLM2-family model through the captioning wrapper: built offline, fed a clip as a
video, generates deterministically and identically in a left-padded batch."""

import numpy as np
import pytest
import torch

from curate.models.tiny_vlm import TINY_IMAGE_SEQ_LEN, build_tiny_smolvlm
from curate.models.vlm import Captioner, ClipFrames

FRAMES = 8
FPS = 2.0
# Per frame the processor writes <fake_token_around_image><global-img><image>*seq_len<fake_...>.
IMAGE_TOKENS_PER_FRAME = TINY_IMAGE_SEQ_LEN


def synthetic_clip(seed: int, frames: int = FRAMES, height: int = 96, width: int = 160) -> np.ndarray:
    """uint8 (frames, height, width, 3) gradients that drift frame to frame, different per seed."""
    y, x = np.mgrid[0:height, 0:width]
    clip = [
        np.stack([(x * (1 + seed) + y * 2 + t * 16) % 256, (y * (3 + seed) + t * 8) % 256, (x + y + seed * 40) % 256], -1)
        for t in range(frames)
    ]
    return np.asarray(clip, dtype=np.uint8)


@pytest.fixture(scope="module")
def tiny(offline):
    model, processor = build_tiny_smolvlm(seed=0)
    return Captioner(model, processor, torch.device("cpu"), "tiny")


def video(clip: np.ndarray) -> ClipFrames:
    return ClipFrames(clip, list(range(len(clip))), FPS, len(clip))


def generate(captioner, clips, prompts, max_new_tokens: int = 8) -> tuple[torch.Tensor, dict]:
    """Greedy new tokens (batch, max_new_tokens) for the clips, and the inputs that produced them."""
    inputs = captioner.inputs([video(c) for c in clips], prompts)
    with torch.inference_mode():
        out = captioner.model.generate(**inputs, max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens, do_sample=False)
    return out[:, inputs["input_ids"].shape[1] :], inputs


def test_video_expands_to_image_tokens_per_frame(tiny):
    inputs = tiny.inputs([video(synthetic_clip(0))], ["Describe this video."])
    ids = inputs["input_ids"][0]
    assert int((ids == tiny.model.config.image_token_id).sum()) == FRAMES * IMAGE_TOKENS_PER_FRAME
    # Every frame is kept (not resampled) and squashed to the vision tower's square input.
    assert tuple(inputs["pixel_values"].shape) == (1, FRAMES, 3, 64, 64)
    assert tiny.processor.tokenizer.decode(ids).count("Frame from") == FRAMES


def test_generate_is_deterministic_and_decodes(tiny):
    clip = synthetic_clip(0)
    first, _ = generate(tiny, [clip], ["Describe this video."])
    second, _ = generate(tiny, [clip], ["Describe this video."])
    assert first.shape == (1, 8)
    assert torch.equal(first, second)
    assert isinstance(tiny.processor.batch_decode(first, skip_special_tokens=True)[0], str)


def test_tiny_captions_are_words_and_end(tiny):
    """The tiny model's generation config keeps its random output readable and finite."""
    answers = tiny.generate(tiny.inputs([video(synthetic_clip(s)) for s in range(3)], ["Describe."] * 3), {"max_new_tokens": 60})
    for answer in answers:
        assert answer.finished and answer.num_tokens < 60
        assert all(word.strip(".,").isalpha() for word in answer.text.split() if word.strip(".,"))


def test_same_seed_same_weights(offline):
    a, _ = build_tiny_smolvlm(seed=3)
    b, _ = build_tiny_smolvlm(seed=3)
    c, _ = build_tiny_smolvlm(seed=4)
    pa, pb, pc = (torch.cat([p.flatten() for p in m.parameters()]) for m in (a, b, c))
    assert torch.equal(pa, pb)
    assert not torch.equal(pa, pc)


def test_left_padded_batch_matches_one_by_one(tiny):
    clips = [synthetic_clip(1), synthetic_clip(2)]
    # Prompts of different lengths, so the shorter one is padded.
    prompts = ["Describe this video.", "Write a short caption for the video in one sentence, please."]
    batched, inputs = generate(tiny, clips, prompts)
    assert (inputs["attention_mask"][0] == 0).any()  # padding really happened, on the left
    assert inputs["attention_mask"][0, -1] == 1
    singles = [generate(tiny, [clip], [prompt])[0][0] for clip, prompt in zip(clips, prompts, strict=True)]
    assert torch.equal(batched[0], singles[0])
    assert torch.equal(batched[1], singles[1])
