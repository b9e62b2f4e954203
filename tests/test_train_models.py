"""The trainer's model families: the tiny Wan (diffusers/transformers classes, random weights, built
offline) through the VideoFamily interface, and the pretrained preset's offline failure."""

import time

import numpy as np
import pytest
import torch

from curate.errors import ConfigError, ModelUnavailable
from curate.models import hub
from train.models import FAMILIES, load_family, pixels_to_frames, presets
from train.models.wan import HUB_ID, HUB_ID_14B, TINY_LATENT_CHANNELS, TINY_TEXT_MAX_LENGTH

FRAMES, HEIGHT, WIDTH = 9, 32, 32
CAPTION = "A red car drives down a winding mountain road"


def synthetic_frames(batch: int = 1, frames: int = FRAMES, height: int = HEIGHT, width: int = WIDTH) -> torch.Tensor:
    """uint8 (batch, frames, height, width, 3) gradients that drift frame to frame, different per clip."""
    y, x = np.mgrid[0:height, 0:width]
    clips = [
        [np.stack([(x * (8 + b) + t * 16) % 256, (y * 6 + t * 8) % 256, ((x + y) * 4 + b * 40) % 256], -1) for t in range(frames)]
        for b in range(batch)
    ]
    return torch.from_numpy(np.asarray(clips, dtype=np.uint8))


@pytest.fixture(scope="module")
def tiny(offline):
    return load_family("tiny", "cpu", seed=0)


def test_registry_lists_presets_and_rejects_unknown(offline):
    assert {"tiny", "wan2.1-t2v-1.3b", "wan2.1-t2v-14b"} <= set(presets()) == set(FAMILIES)
    with pytest.raises(ConfigError, match="unknown model preset 'nope'.*tiny"):
        load_family("nope")


def test_tiny_builds_with_frozen_encoders(tiny):
    assert tiny.preset == "tiny" and tiny.source == "random"
    assert all(p.requires_grad for p in tiny.transformer.parameters())
    for frozen in (tiny.vae, tiny.text_encoder):
        assert not frozen.training and not any(p.requires_grad for p in frozen.parameters())
    assert sum(p.numel() for p in tiny.transformer.parameters()) < 1_000_000
    assert set(tiny.state_dict()) == set(tiny.transformer.state_dict())


def test_text_embeddings(tiny):
    embeddings = tiny.encode_text([CAPTION, "A cat sleeps on a windowsill", ""])
    assert embeddings.shape == (3, TINY_TEXT_MAX_LENGTH, tiny.text_encoder.config.d_model)
    assert embeddings.dtype == torch.float32 and torch.isfinite(embeddings).all()
    assert not torch.allclose(embeddings[0], embeddings[1])
    # The empty prompt is just </s>: one non-zero row, the rest zero padding (as WanPipeline pads).
    nonzero_rows = embeddings.abs().sum(-1).gt(0).sum(1)
    assert nonzero_rows[2] == 1 and nonzero_rows[0] > nonzero_rows[2]
    # Padding to a fixed length makes a prompt's embedding independent of its batch.
    torch.testing.assert_close(tiny.encode_text([CAPTION])[0], embeddings[0])
    # Over-long prompts are truncated, not an error.
    assert tiny.encode_text([CAPTION * 20]).shape[1] == TINY_TEXT_MAX_LENGTH


def test_video_round_trip_shapes_and_normalisation(tiny):
    frames = synthetic_frames(batch=2)
    latents = tiny.encode_video(frames)
    assert latents.shape == (2, *tiny.latent_shape(FRAMES, HEIGHT, WIDTH)) == (2, TINY_LATENT_CHANNELS, 3, 4, 4)
    assert latents.dtype == torch.float32 and not latents.requires_grad
    assert 0.3 < latents.std().item() < 3.0  # calibrated to about unit scale
    decoded = tiny.decode_latents(latents)
    assert decoded.shape == frames.shape and decoded.dtype == torch.uint8
    # decode_latents undoes the normalisation: the same frames as decoding the raw posterior mean.
    with torch.no_grad():
        raw = tiny.vae.encode(frames.permute(0, 4, 1, 2, 3).float() / 127.5 - 1).latent_dist.mode()
        expected = pixels_to_frames(tiny.vae.decode(raw).sample)
    assert (decoded.int() - expected.int()).abs().max() <= 1  # float rounding may move a level


@pytest.mark.parametrize("shape", [(1, 32, 32), (5, 48, 64), (13, 16, 32)])
def test_latent_shape_matches_the_vae(tiny, shape):
    latents = tiny.encode_video(synthetic_frames(1, *shape))
    assert latents.shape[1:] == tiny.latent_shape(*shape)


def test_predict_keeps_the_latent_shape(tiny):
    latents = tiny.encode_video(synthetic_frames(batch=2))
    text = tiny.encode_text([CAPTION, ""])
    velocity = tiny.predict(torch.randn_like(latents), torch.tensor([0.2, 0.9]), text)
    assert velocity.shape == latents.shape and velocity.dtype == torch.float32
    velocity.pow(2).mean().backward()  # gradients reach the transformer only
    assert all(p.grad is not None for p in tiny.transformer.parameters() if p.requires_grad)
    tiny.transformer.zero_grad(set_to_none=True)
    # A different time gives a different prediction: the timestep reaches the model.
    with torch.no_grad():
        noisy = torch.randn_like(latents)
        assert not torch.allclose(tiny.predict(noisy, torch.tensor([0.1, 0.1]), text), tiny.predict(noisy, torch.tensor([0.8, 0.8]), text))


def test_flow_matching_overfits_one_clip(offline):
    """AdamW on x_t = (1 - t) x0 + t noise, target noise - x0, with fresh t and noise each step:
    the loss on a fixed set of (t, noise) pairs falls well below its start (to ~0.46x here)."""
    family = load_family("tiny", seed=0)
    x0 = family.encode_video(synthetic_frames())
    text = family.encode_text([CAPTION])
    generator = torch.Generator().manual_seed(0)
    eval_t = torch.linspace(0.05, 0.95, 16)
    eval_noise = torch.randn((16, *x0.shape[1:]), generator=generator)

    def loss(t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        batch, tt = len(t), t.view(-1, 1, 1, 1, 1)
        clean = x0.expand(batch, -1, -1, -1, -1)
        velocity = family.predict((1 - tt) * clean + tt * noise, t, text.expand(batch, -1, -1))
        return (velocity - (noise - clean)).pow(2).mean()

    with torch.no_grad():
        initial = loss(eval_t, eval_noise).item()
    optimizer = torch.optim.AdamW(family.transformer.parameters(), lr=3e-3)
    for _ in range(60):
        t, noise = torch.rand(4, generator=generator), torch.randn((4, *x0.shape[1:]), generator=generator)
        optimizer.zero_grad()
        loss(t, noise).backward()
        optimizer.step()
    with torch.no_grad():
        final = loss(eval_t, eval_noise).item()
    assert final < 0.7 * initial, (initial, final)


def test_same_seed_same_weights(offline):
    before = torch.random.get_rng_state()
    first, again, other = (load_family("tiny", seed=s) for s in (0, 0, 1))
    assert torch.equal(torch.random.get_rng_state(), before)  # the caller's random state is untouched
    for a, b in zip(first.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert first.vae.config.latents_std == again.vae.config.latents_std
    assert any(not torch.equal(a, b) for a, b in zip(first.state_dict().values(), other.state_dict().values(), strict=True))
    # Loading the transformer's state makes another seed predict identically.
    other.load_state_dict(first.state_dict())
    text = first.encode_text([CAPTION])
    latents = torch.randn(1, *first.latent_shape(FRAMES, HEIGHT, WIDTH))
    with torch.no_grad():
        torch.testing.assert_close(other.predict(latents, torch.tensor([0.5]), text), first.predict(latents, torch.tensor([0.5]), text))


def test_check_video_shape_names_valid_values(tiny):
    tiny.check_video_shape(FRAMES, HEIGHT, WIDTH)
    with pytest.raises(ValueError, match=r"num_frames=10 must be 1 \+ 4k, e.g. 9 or 13"):
        tiny.check_video_shape(10, 32, 32)
    with pytest.raises(ValueError, match="height=40 must be a multiple of 16, e.g. 32 or 48; width=8 .* e.g. 16"):
        tiny.latent_shape(9, 40, 8)
    # The VAE alone would silently drop the 10th frame; the family refuses instead.
    with pytest.raises(ValueError, match="num_frames=10"):
        tiny.encode_video(synthetic_frames(frames=10))
    with pytest.raises(ValueError, match="uint8"):
        tiny.encode_video(synthetic_frames().float())


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    """An empty Hugging Face cache; the socket layer refuses connections."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("preset", "hub_id"), [("wan2.1-t2v-1.3b", HUB_ID), ("wan2.1-t2v-14b", HUB_ID_14B)])
def test_pretrained_preset_offline_is_one_clear_line(offline, empty_hub, monkeypatch, preset, hub_id):
    from huggingface_hub import constants

    started = time.monotonic()
    with pytest.raises(ModelUnavailable) as missing:
        load_family(preset)
    message = str(missing.value)
    assert "\n" not in message and hub_id in message and "HF_HUB_OFFLINE" in message
    assert f"hf download {hub_id}" in message and "local folder" in message
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "reachable", lambda url, timeout=0: False)
    with pytest.raises(ModelUnavailable, match="unreachable") as unreachable:
        load_family(preset)
    assert "\n" not in str(unreachable.value) and hub_id in str(unreachable.value)
    with pytest.raises(ModelUnavailable, match="folder not found"):
        load_family(preset, source="/nonexistent/wan")
    assert time.monotonic() - started < 30  # no retries against a missing network


def test_pretrained_loader_reads_a_diffusers_folder(tiny, tmp_path):
    """The 1.3B preset's loading code, run on the tiny weights saved in the hub repo's layout."""
    for part in ("transformer", "vae", "text_encoder", "tokenizer"):
        getattr(tiny, part).save_pretrained(tmp_path / part)
    loaded = load_family("wan2.1-t2v-1.3b", source=str(tmp_path))
    assert loaded.source == str(tmp_path) and loaded.text_max_length == 512
    text = loaded.encode_text([CAPTION])
    torch.testing.assert_close(text[:, :TINY_TEXT_MAX_LENGTH], tiny.encode_text([CAPTION]))
    assert not text[:, TINY_TEXT_MAX_LENGTH:].any()
    frames = synthetic_frames()
    latents = loaded.encode_video(frames)
    torch.testing.assert_close(latents, tiny.encode_video(frames))
    # Same inputs, same velocity (the padding length is part of the conditioning, so both get 64 tokens).
    short = tiny.encode_text([CAPTION])
    with torch.no_grad():
        torch.testing.assert_close(loaded.predict(latents, torch.tensor([0.3]), short), tiny.predict(latents, torch.tensor([0.3]), short))


def test_the_encoders_alone_encode_as_the_whole_family_does(tiny, tmp_path):
    """`with_transformer=False` (what precompute loads): the same encoders, shape rules and
    outputs, and no transformer. The pretrained loader needs only the transformer's config.json:
    its folder here holds no weights, which the whole family could not load without."""
    encoders = load_family("tiny", "cpu", seed=0, with_transformer=False)
    for part in ("vae", "text_encoder"):
        getattr(tiny, part).save_pretrained(tmp_path / part)
    tiny.tokenizer.save_pretrained(tmp_path / "tokenizer")
    tiny.transformer.save_config(tmp_path / "transformer")
    folder = load_family("wan2.1-t2v-1.3b", source=str(tmp_path), with_transformer=False)
    with pytest.raises(ModelUnavailable):
        load_family("wan2.1-t2v-1.3b", source=str(tmp_path))
    frames = synthetic_frames()
    for family in (encoders, folder):
        assert family.transformer is None
        assert family.shape_steps() == tiny.shape_steps()
        assert family.latent_shape(FRAMES, HEIGHT, WIDTH) == tiny.latent_shape(FRAMES, HEIGHT, WIDTH)
        torch.testing.assert_close(family.encode_video(frames), tiny.encode_video(frames))
    torch.testing.assert_close(encoders.encode_text([CAPTION]), tiny.encode_text([CAPTION]))
    torch.testing.assert_close(folder.encode_text([CAPTION])[:, :TINY_TEXT_MAX_LENGTH], tiny.encode_text([CAPTION]))
