"""Wan 2.1 text-to-video: diffusers' `WanTransformer3DModel` + `AutoencoderKLWan` + a UMT5 encoder.

Presets:
- `wan2.1-t2v-1.3b`: `Wan-AI/Wan2.1-T2V-1.3B-Diffusers` (subfolders transformer, vae,
  text_encoder, tokenizer), or any local folder / hub id with that layout (`source`).
- `wan2.1-t2v-14b`: `Wan-AI/Wan2.1-T2V-14B-Diffusers`, the same layout, VAE and text encoder
  around a wider, deeper transformer (5120 wide, 40 blocks; 1536 and 30 in the 1.3B), read from
  its config.
- `tiny`: the same classes with random weights of a few hundred thousand parameters, built from
  config in a fraction of a second, with a byte-level BPE tokenizer trained here under T5's
  conventions (<pad> = 0, </s> = 1 appended to every prompt, <unk> = 2). Nothing is downloaded.

Text goes in as WanPipeline prepares it: padded to a fixed length, with the encoder's outputs
past each prompt's </s> zeroed. Latents are the VAE posterior mean (Wan's own code encodes to
the mean), normalised per channel with the VAE config's `latents_mean`/`latents_std`.

Shapes (read from the configs): the VAE compresses 4x in time, keeping the first frame on its
own, and 8x in space; the transformer patches latents 2x2. So a clip has 1 + 4k frames and a
height and width that are multiples of 16. The VAE itself silently drops trailing frames of any
other length, hence the explicit check.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from curate.errors import ConfigError, ModelUnavailable
from curate.models.hub import hub_offline, quiet_logs, reason, seeded
from train.models.family import VideoFamily, cast_weights, fetch_snapshot, frames_to_pixels, pixels_to_frames, register

HUB_ID = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"
HUB_ID_14B = "Wan-AI/Wan2.1-T2V-14B-Diffusers"
# What training needs from the diffusers repo (the scheduler and pipeline config are not used).
_FILES = ["model_index.json", "transformer/*", "vae/*", "text_encoder/*", "tokenizer/*"]
_ENCODER_FILES = ["model_index.json", "transformer/config.json", "vae/*", "text_encoder/*", "tokenizer/*"]  # precompute's
TEXT_MAX_LENGTH = 512  # WanPipeline's prompt length
TIME_SCALE = 1000.0  # Wan's transformer takes flow time t scaled to [0, 1000], as its scheduler gives

# Tiny preset: T5 special tokens at T5's ids, a 512-token byte-level BPE, 64-token prompts.
PAD_TOKEN, EOS_TOKEN, UNK_TOKEN = "<pad>", "</s>", "<unk>"
TINY_VOCAB_SIZE = 512
TINY_TEXT_MAX_LENGTH = 64
TINY_LATENT_CHANNELS = 16  # Wan 2.1's, so latent shards have the real layout
# The tiny VAE's latent statistics are measured at build time on fixed smooth random clips of this
# shape, so normalised latents have about unit scale, as the real model's do.
_CALIBRATION_SHAPE = (4, 3, 9, 32, 32)  # (clips, channels, frames, height, width)


class WanFamily(VideoFamily):
    """Wan 2.1 T2V behind the VideoFamily interface (see `train.models`)."""

    # q, k, v and output projections of self-attention (attn1) and cross-attention (attn2), and
    # both feed-forward layers, in every block: the layers Wan's LoRA trainers adapt.
    lora_targets = ("to_q", "to_k", "to_v", "to_out.0", "ffn.net.0.proj", "ffn.net.2")

    def __init__(self, *, patch_size, **parts):
        super().__init__(**parts)
        self.tokenizer.padding_side = "right"  # the zeroing in encode_text assumes it
        config = self.vae.config
        channels = config.z_dim
        self.latents_mean = torch.tensor(config.latents_mean, device=self.device).view(1, channels, 1, 1, 1)
        self.latents_std = torch.tensor(config.latents_std, device=self.device).view(1, channels, 1, 1, 1)
        self.temporal_factor = config.scale_factor_temporal
        self.spatial_factor = config.scale_factor_spatial
        patch_t, patch_h, patch_w = patch_size  # the transformer config's (it may not be loaded)
        if patch_t != 1 or patch_h != patch_w:
            raise ModelUnavailable(f"{self.label}: unsupported transformer patch size {(patch_t, patch_h, patch_w)}")
        self.spatial_multiple = self.spatial_factor * patch_h  # latents must tile into patches

    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        cleaned = [" ".join(prompt.split()) for prompt in prompts]  # WanPipeline collapses whitespace too
        tokens = self.tokenizer(
            cleaned,
            padding="max_length",
            max_length=self.text_max_length,
            truncation=True,
            add_special_tokens=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        ids, mask = tokens.input_ids.to(self.device), tokens.attention_mask.to(self.device)
        with torch.no_grad():
            hidden = self.text_encoder(ids, mask).last_hidden_state
        # Wan was trained on embeddings that are zero past each prompt's end (WanPipeline does it).
        return hidden.float() * mask.unsqueeze(-1)

    def encode_video(self, frames: torch.Tensor) -> torch.Tensor:
        self.check_frames(frames)
        pixels = frames_to_pixels(frames.to(self.device), self.vae.dtype)
        with torch.no_grad():
            latents = self.vae.encode(pixels).latent_dist.mode()
        return (latents.float() - self.latents_mean) / self.latents_std

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        raw = latents.to(self.device).float() * self.latents_std + self.latents_mean
        with torch.no_grad():
            pixels = self.vae.decode(raw.to(self.vae.dtype)).sample  # clamped to [-1, 1] by the VAE
        return pixels_to_frames(pixels)

    def predict(self, latents_noisy: torch.Tensor, timesteps: torch.Tensor, text_embeddings: torch.Tensor) -> torch.Tensor:
        times = torch.as_tensor(timesteps, device=latents_noisy.device, dtype=torch.float32)
        times = times.expand(latents_noisy.shape[0]) * TIME_SCALE
        return self.denoiser(hidden_states=latents_noisy, timestep=times, encoder_hidden_states=text_embeddings, return_dict=False)[0]

    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        self.check_video_shape(num_frames, height, width)
        frames = (num_frames - 1) // self.temporal_factor + 1
        return (self.vae.config.z_dim, frames, height // self.spatial_factor, width // self.spatial_factor)

    def check_video_shape(self, num_frames: int, height: int, width: int) -> None:
        step, multiple = self.temporal_factor, self.spatial_multiple
        problems = []
        if num_frames < 1 or (num_frames - 1) % step:
            problems.append(f"num_frames={num_frames} must be 1 + {step}k, e.g. {_neighbours(num_frames, step, 1)}")
        for name, size in (("height", height), ("width", width)):
            if size < multiple or size % multiple:
                problems.append(f"{name}={size} must be a multiple of {multiple}, e.g. {_neighbours(size, multiple, multiple)}")
        if problems:
            raise ConfigError(f"video shape does not fit {self.label}: {'; '.join(problems)}")

    def shape_steps(self) -> tuple[int, int]:
        return self.temporal_factor, self.spatial_multiple

    @property
    def label(self) -> str:
        return f"Wan ({self.preset})"


def _neighbours(value: int, step: int, first: int) -> str:
    """The valid values (first + step*k) nearest `value`, below and above, as "a or b"."""
    below = first + max(0, (value - first) // step) * step
    above = below + step if below < value else below
    return str(below) if below == above else f"{below} or {above}"


# -- presets -------------------------------------------------------------------------------


@register("wan2.1-t2v-1.3b")
def load_wan21_t2v_1_3b(
    device: torch.device, dtype: torch.dtype, seed: int, source: str | None, transformer_dtype: torch.dtype, with_transformer: bool = True
) -> WanFamily:
    """The pretrained 1.3B model (see `load_pretrained`); `seed` is unused (nothing is random)."""
    return load_pretrained(source or HUB_ID, "wan2.1-t2v-1.3b", device, dtype, transformer_dtype, with_transformer)


@register("wan2.1-t2v-14b")
def load_wan21_t2v_14b(
    device: torch.device, dtype: torch.dtype, seed: int, source: str | None, transformer_dtype: torch.dtype, with_transformer: bool = True
) -> WanFamily:
    """The pretrained 14B model (see `load_pretrained`); `seed` is unused (nothing is random)."""
    return load_pretrained(source or HUB_ID_14B, "wan2.1-t2v-14b", device, dtype, transformer_dtype, with_transformer)


def load_pretrained(
    model: str, preset: str, device: torch.device, dtype: torch.dtype, transformer_dtype: torch.dtype = torch.float32,
    with_transformer: bool = True,
) -> WanFamily:  # fmt: skip
    """A Wan 2.1 T2V model in diffusers' layout: a hub id or a local folder. The text encoder is
    `dtype`, the transformer `transformer_dtype` (read in that dtype: a bf16 14B never exists in
    float32), the VAE float32 whatever both, as Wan's diffusers examples keep it. Without the
    transformer, only its config.json is read (and fetched)."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import AutoTokenizer, UMT5EncoderModel

    folder = fetch_snapshot(model, _FILES if with_transformer else _ENCODER_FILES)
    transformer = None
    try:
        with hub_offline(), quiet_logs():  # everything is local by now: never wait on the network
            tokenizer = AutoTokenizer.from_pretrained(folder, subfolder="tokenizer")
            text_encoder = UMT5EncoderModel.from_pretrained(folder, subfolder="text_encoder", dtype=dtype)
            vae = AutoencoderKLWan.from_pretrained(folder, subfolder="vae", dtype=torch.float32)
            patch_size = WanTransformer3DModel.load_config(folder, subfolder="transformer")["patch_size"]
            if with_transformer:
                transformer = WanTransformer3DModel.from_pretrained(folder, subfolder="transformer", dtype=transformer_dtype)
    except Exception as exc:
        raise ModelUnavailable(f"cannot load video model {model} from {folder}: {reason(exc)}") from None
    return WanFamily(
        patch_size=patch_size,
        transformer=transformer,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_max_length=TEXT_MAX_LENGTH,
        device=device,
        preset=preset,
        source=folder,
    )


# transformer/config.json of Wan-AI/Wan2.1-T2V-1.3B-Diffusers (diffusers' defaults are the 14B's: 40 heads,
# ffn_dim 13824, 40 layers): its architecture with random weights where the weights cannot be had.
WAN21_T2V_1_3B_TRANSFORMER = {
    "patch_size": (1, 2, 2), "num_attention_heads": 12, "attention_head_dim": 128, "in_channels": 16,
    "out_channels": 16, "text_dim": 4096, "freq_dim": 256, "ffn_dim": 8960, "num_layers": 30,
    "cross_attn_norm": True, "qk_norm": "rms_norm_across_heads", "eps": 1e-6, "rope_max_seq_len": 1024,
}  # fmt: skip


def random_transformer(config: dict, dtype: torch.dtype, device: torch.device | str):
    """A WanTransformer3DModel of `config` with random weights, made on `device` (on a GPU, never
    through CPU memory) and cast as `from_pretrained(dtype=dtype)` would load it: to measure memory
    and speed without the published weights (bench/train_memory.py)."""
    from diffusers import WanTransformer3DModel

    with torch.device(device):
        transformer = WanTransformer3DModel(**config)
    return cast_weights(transformer, dtype)


@register("tiny")
def build_tiny(
    device: torch.device, dtype: torch.dtype, seed: int, source: str | None, transformer_dtype: torch.dtype, with_transformer: bool = True
) -> WanFamily:
    """Random tiny Wan, the same weights for the same seed (built on the CPU, then moved; the
    transformer last, so the encoders are the same without it)."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import UMT5EncoderModel

    if source is not None:
        raise ConfigError("the tiny model preset is built from config and takes no model source")
    tokenizer = build_tiny_tokenizer()
    with seeded(seed):
        text_encoder = UMT5EncoderModel(tiny_text_config(len(tokenizer)))
        vae = AutoencoderKLWan(**TINY_VAE)
        config = tiny_transformer_config(text_dim=text_encoder.config.d_model)
        transformer = cast_weights(WanTransformer3DModel(**config), transformer_dtype) if with_transformer else None
    calibrate_latents(vae.eval(), seed)
    return WanFamily(
        patch_size=config["patch_size"],
        transformer=transformer,
        vae=vae,
        text_encoder=text_encoder.to(dtype),
        tokenizer=tokenizer,
        text_max_length=TINY_TEXT_MAX_LENGTH,
        device=device,
        preset="tiny",
        source="random",
    )


# Wan 2.1's VAE layout (4 levels: 8x spatial; downsampling in time at the last two: 4x) with a
# fraction of its width (base 8 instead of 96) and one residual block per level instead of two.
TINY_VAE = {
    "base_dim": 8,
    "z_dim": TINY_LATENT_CHANNELS,
    "dim_mult": [1, 2, 2, 2],
    "num_res_blocks": 1,
    "temperal_downsample": [False, True, True],  # sic: diffusers' spelling
    "scale_factor_temporal": 4,
    "scale_factor_spatial": 8,
}


def tiny_transformer_config(text_dim: int) -> dict:
    """Two blocks of width 64 (4 heads of 16: RoPE splits a head 8/4/4 over t/h/w), 2x2 patches."""
    return {
        "patch_size": (1, 2, 2),
        "num_attention_heads": 4,
        "attention_head_dim": 16,
        "in_channels": TINY_LATENT_CHANNELS,
        "out_channels": TINY_LATENT_CHANNELS,
        "text_dim": text_dim,
        "freq_dim": 32,
        "ffn_dim": 128,
        "num_layers": 2,
    }


def tiny_text_config(vocab_size: int):
    """A two-layer UMT5 encoder of width 32 with T5's pad/eos ids."""
    from transformers import UMT5Config

    return UMT5Config(
        vocab_size=vocab_size,
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        feed_forward_proj="gated-gelu",  # as umt5-xxl
        dropout_rate=0.0,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )


def build_tiny_tokenizer():
    """A byte-level BPE `PreTrainedTokenizerFast` with T5's special tokens and </s> appended to
    every text, trained on the caption corpus of `curate.models.tiny_vlm` (any text encodes)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from curate.models.tiny_vlm import CAPTION_TEXT  # the same caption-like text the tiny captioner learns

    tok = Tokenizer(models.BPE(unk_token=UNK_TOKEN))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB_SIZE,
        special_tokens=[PAD_TOKEN, EOS_TOKEN, UNK_TOKEN],  # ids 0, 1, 2 as in T5
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CAPTION_TEXT.split("\n"), trainer=trainer)
    eos_id = tok.token_to_id(EOS_TOKEN)
    tok.post_processor = processors.TemplateProcessing(
        single=f"$A {EOS_TOKEN}", pair=f"$A {EOS_TOKEN} $B {EOS_TOKEN}", special_tokens=[(EOS_TOKEN, eos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        model_max_length=TINY_TEXT_MAX_LENGTH,
        clean_up_tokenization_spaces=False,  # the byte-level decoder already restores spaces
    )


def calibrate_latents(vae, seed: int) -> None:
    """Set the VAE config's latents_mean/std to the per-channel statistics of its posterior means
    on fixed smooth random clips. A random VAE's latents are far from unit scale (std ~0.2),
    which would leave flow matching with almost no signal to learn next to the noise."""
    clips, channels, frames, height, width = _CALIBRATION_SHAPE
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(clips, channels, 3, height // 8, width // 8, generator=generator)
    pixels = F.interpolate(coarse, size=(frames, height, width), mode="trilinear") * 2 - 1
    with torch.no_grad():
        latents = vae.encode(pixels.to(vae.dtype)).latent_dist.mode().float()
    per_channel = latents.transpose(0, 1).flatten(1)
    vae.register_to_config(
        latents_mean=per_channel.mean(1).tolist(),
        latents_std=per_channel.std(1).clamp_min(1e-4).tolist(),
    )
