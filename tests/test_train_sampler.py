"""The validation sampler: the shifted flow-matching schedule, Euler + classifier-free guidance on an
exact velocity field (the integrator, not the network), the tiny Wan end to end, and the mp4 files."""

import json

import av
import numpy as np
import pytest
import torch

from train.models import load_family
from train.sampler import sample, sample_to_files, timesteps, write_mp4

FRAMES, HEIGHT, WIDTH = 9, 32, 32
PROMPTS = ["A red car drives down a winding mountain road", "A cat sleeps on a windowsill"]
STEPS = 4  # enough to exercise the loop; the tiny model's output quality is not the point


@pytest.fixture(scope="module")
def tiny(offline):
    return load_family("tiny", "cpu", seed=0)


def run(family, **overrides):
    settings = dict(num_frames=FRAMES, height=HEIGHT, width=WIDTH, num_steps=STEPS) | overrides
    return sample(family, PROMPTS, **settings)


# -- schedule ------------------------------------------------------------------------------


def test_schedule_endpoints_monotonic_and_shift():
    linear = timesteps(10, 1.0)
    torch.testing.assert_close(linear, torch.linspace(1, 0, 11))
    for shift in (1.0, 3.0, 5.0):
        times = timesteps(20, shift)
        assert times.shape == (21,) and times[0] == 1.0 and times[-1] == 0.0
        assert (times.diff() < 0).all()
    # A larger shift keeps the inner times closer to noise.
    assert (timesteps(20, 3.0)[1:-1] > torch.linspace(1, 0, 21)[1:-1]).all()
    assert (timesteps(20, 5.0)[1:-1] > timesteps(20, 3.0)[1:-1]).all()
    torch.testing.assert_close(timesteps(2, 3.0)[1], torch.tensor(0.75))  # 3 * 0.5 / (1 + 2 * 0.5)
    with pytest.raises(ValueError, match="num_steps"):
        timesteps(0, 3.0)
    with pytest.raises(ValueError, match="shift"):
        timesteps(4, 0.0)


# -- the integrator on an exact velocity field ---------------------------------------------


class StraightFlow:
    """A stand-in family whose velocity is exact for straight paths to fixed targets: v(x, t) =
    (x - target) / t, with target x0 for a prompt and `uncond` for the empty prompt. Euler is exact
    on it (x - target shrinks by t_next / t each step), so the sampler must land on x0, or with
    guidance g on the extrapolation uncond + g * (x0 - uncond)."""

    device = torch.device("cpu")
    preset = "straight"

    def __init__(self, x0: torch.Tensor, uncond: torch.Tensor):
        self.x0, self.uncond = x0, uncond
        self.transformer = torch.nn.Sequential(torch.nn.Dropout(0.5), torch.nn.Identity())
        self.calls: list[tuple[int, torch.Tensor]] = []

    def latent_shape(self, num_frames, height, width):
        return tuple(self.x0.shape)

    def encode_text(self, prompts):
        return torch.tensor([[1.0] if p else [0.0] for p in prompts])  # 1 marks a conditional input

    embed_text = encode_text  # what the sampler calls (a family's kept embeddings, else encode_text)

    def predict(self, x_t, t, text):
        assert (t > 0).all() and not self.transformer.training
        self.calls.append((len(x_t), t.clone()))
        target = torch.where(text.view(-1, 1, 1, 1, 1) > 0, self.x0, self.uncond)
        return (x_t - target) / t.view(-1, 1, 1, 1, 1)

    def decode_latents(self, latents):
        self.final = latents
        return torch.zeros((len(latents), 1, 2, 2, 3), dtype=torch.uint8)


def test_euler_recovers_the_target_of_an_exact_velocity():
    generator = torch.Generator().manual_seed(1)
    x0, uncond = torch.randn((2, 3, 4, 4), generator=generator), torch.randn((2, 3, 4, 4), generator=generator)
    flow = StraightFlow(x0, uncond)
    sample(flow, PROMPTS, FRAMES, HEIGHT, WIDTH, num_steps=7, guidance_scale=1.0)
    torch.testing.assert_close(flow.final, x0.expand(2, -1, -1, -1, -1), atol=1e-5, rtol=0)
    # g = 1: no unconditional half, one call per step at the schedule's times (never t = 0).
    assert [size for size, _ in flow.calls] == [2] * 7
    torch.testing.assert_close(torch.stack([t[0] for _, t in flow.calls]), timesteps(7, 3.0)[:-1])

    flow = StraightFlow(x0, uncond)
    sample(flow, PROMPTS, FRAMES, HEIGHT, WIDTH, num_steps=5, guidance_scale=4.0)
    guided_target = uncond + 4.0 * (x0 - uncond)
    torch.testing.assert_close(flow.final, guided_target.expand(2, -1, -1, -1, -1), atol=1e-4, rtol=0)
    assert [size for size, _ in flow.calls] == [4] * 5  # cond and uncond in one batch


# -- the tiny Wan --------------------------------------------------------------------------


def test_tiny_shape_dtype_and_seeds(tiny):
    rng_before = torch.random.get_rng_state()
    first = run(tiny, seed=0)
    assert first.shape == (len(PROMPTS), FRAMES, HEIGHT, WIDTH, 3) and first.dtype == torch.uint8
    assert torch.equal(run(tiny, seed=0), first)
    assert not torch.equal(run(tiny, seed=1), first)
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # noise comes from its own generator


def test_guidance_scale_one_differs_from_guided(tiny):
    unguided = run(tiny, guidance_scale=1.0)
    assert unguided.shape == (len(PROMPTS), FRAMES, HEIGHT, WIDTH, 3)
    assert not torch.equal(unguided, run(tiny, guidance_scale=5.0))


def test_training_mode_is_restored(tiny):
    seen = []
    hook = tiny.transformer.register_forward_pre_hook(lambda module, args: seen.append(module.training))
    try:
        tiny.transformer.train()
        run(tiny, num_steps=1)
        assert seen == [False] and tiny.transformer.training
        assert all(m.training for m in tiny.transformer.modules())
        tiny.transformer.eval()
        run(tiny, num_steps=1)
        assert not any(m.training for m in tiny.transformer.modules())
    finally:
        hook.remove()
        tiny.transformer.train()


@pytest.mark.filterwarnings("ignore:Mismatch dtype between input and weight")  # CPU rms_norm under autocast
def test_autocast_bf16(tiny):
    frames = run(tiny, num_steps=2, autocast=torch.bfloat16)
    assert frames.shape == (len(PROMPTS), FRAMES, HEIGHT, WIDTH, 3) and frames.dtype == torch.uint8


# -- files ---------------------------------------------------------------------------------


def decode(path):
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def test_sample_mp4s_decode_to_the_configured_shape(tiny, tmp_path):
    out = tmp_path / "samples"
    paths = sample_to_files(tiny, PROMPTS, out, step=12, num_frames=FRAMES, height=HEIGHT, width=WIDTH, num_steps=STEPS)
    assert paths == [out / "step-12-0.mp4", out / "step-12-1.mp4"]
    for path in paths:
        assert decode(path).shape == (FRAMES, HEIGHT, WIDTH, 3)
    record = json.loads((out / "step-12.json").read_text())
    assert record["prompts"] == PROMPTS and record["files"] == ["step-12-0.mp4", "step-12-1.mp4"]
    assert record["num_frames"] == FRAMES and record["num_steps"] == STEPS and record["guidance_scale"] == 5.0
    assert sorted(p.name for p in out.iterdir()) == ["step-12-0.mp4", "step-12-1.mp4", "step-12.json"]  # no temporaries


def test_write_mp4_round_trip_and_errors(tmp_path):
    y, x = np.mgrid[0:48, 0:64]
    frames = np.stack([np.stack([(x * 4 + t * 8) % 256, y * 5, np.full_like(x, 128)], -1) for t in range(5)]).astype(np.uint8)
    path = write_mp4(torch.from_numpy(frames), tmp_path / "clip.mp4", fps=16)
    decoded = decode(path)
    assert decoded.shape == frames.shape
    assert np.abs(decoded.astype(int) - frames.astype(int)).mean() < 6  # lossy, but the same picture
    with av.open(str(path)) as container:
        assert container.streams.video[0].average_rate == 16
    with pytest.raises(ValueError, match="even height and width, got 33x64"):
        write_mp4(np.zeros((3, 33, 64, 3), np.uint8), tmp_path / "odd.mp4")
    with pytest.raises(ValueError, match="uint8"):
        write_mp4(np.zeros((3, 32, 32, 3), np.float32), tmp_path / "float.mp4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]
