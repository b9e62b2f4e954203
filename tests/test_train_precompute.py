"""`python -m train precompute`: latent shards with the same keys, training from them matches
training from the videos (and releases the text encoder), reruns resume, and mismatched settings are
one clear line."""

from __future__ import annotations

import gc
import json
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds

from curate.shards import Sample, write_shard
from train.__main__ import main
from train.config import resolve
from train.latents import load_npy, trim_padding
from train.models.family import VideoFamily
from train.sampler import sample
from train.trainer import Trainer

COMMON = ["--set", "num_workers=0", "sample_prompts=[]", "log_every=5"]


@pytest.fixture(scope="module")
def latents(train_shards, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("latents")
    assert main(["precompute", "--shards", str(train_shards), "--out", str(out), "--dtype", "float32", "--quiet"]) == 0
    return out


def losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_precompute_loads_no_transformer(train_shards, tmp_path, monkeypatch):
    """Only the encoders are loaded (a 14B transformer alone is some 57 GB in float32)."""
    import train.precompute

    loaded = []

    def load_family(*args, **kwargs):
        loaded.append(real(*args, **kwargs))
        return loaded[-1]

    real = train.precompute.load_family
    monkeypatch.setattr(train.precompute, "load_family", load_family)
    assert main(["precompute", "--shards", str(train_shards), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    assert len(loaded) == 1 and loaded[0].transformer is None


def test_latent_shards_mirror_the_video_shards(train_shards, latents):
    assert sorted(p.name for p in latents.glob("*.tar")) == sorted(p.name for p in train_shards.glob("*.tar"))
    index = json.loads((latents / "index.json").read_text())
    videos = json.loads((train_shards / "index.json").read_text())
    assert [s["nsamples"] for s in index["shardlist"]] == [s["nsamples"] for s in videos["shardlist"]]
    sample = next(iter(wds.WebDataset(str(min(latents.glob("*.tar"))), shardshuffle=False)))
    latent, text = load_npy(sample["latent.npy"]), load_npy(sample["text.npy"])
    assert latent.shape == (16, 3, 4, 4) and latent.dtype == np.float32  # tiny Wan: 9x32x32 frames
    assert 1 <= text.shape[0] < 64 and text.shape[1] == 32 and np.any(text[-1] != 0)  # no padding rows
    meta = json.loads(sample["json"])
    assert meta["latent"]["preset"] == "tiny" and meta["latent"]["num_frames"] == 9 and "clip_id" in meta


def test_training_from_latents_matches_training_from_videos(train_shards, latents, tmp_path):
    """Same seed, same samples in the same order: the encoders' work moved, the losses did not."""
    assert main(["--shards", str(train_shards), "--out", str(tmp_path / "videos"), "--steps", "20", "--quiet", *COMMON]) == 0
    assert main(["--shards", str(latents), "--out", str(tmp_path / "latents"), "--steps", "20", "--quiet", *COMMON]) == 0
    assert losses(tmp_path / "latents") == pytest.approx(losses(tmp_path / "videos"), rel=1e-4)


def test_a_latent_run_releases_the_text_encoder(train_shards, latents, tmp_path, monkeypatch):
    """On latent shards the text encoder is released at the first batch, having kept "" and the
    sample prompts: caption dropout, the validation of video shards (encoded when the run began)
    and sampling go on without it, and give what a run that keeps it gives."""
    overrides = [
        "num_workers=0", "log_every=2", "caption_dropout=0.5", "val_every=2", "sample_every=2",
        "sample_steps=2", "sample_prompts=['a red ball', 'a blue cube']", "tensorboard=false",
    ]  # fmt: skip
    config = resolve("tiny", None, overrides, steps=4, shards=str(latents), val_shards=str(train_shards))
    released = Trainer(config, tmp_path / "released")
    encoder = weakref.ref(released.family.text_encoder)
    released.run(progress=False)
    gc.collect()
    assert released.family.text_encoder is None and encoder() is None  # nothing holds it: its memory is free
    with pytest.raises(ValueError, match="the text encoder was released"):
        released.family.embed_text(["a caption no latent run embeds"])

    monkeypatch.setattr(VideoFamily, "release_text_encoder", lambda family: None)
    kept = Trainer(config, tmp_path / "kept")
    kept.run(progress=False)
    assert kept.family.text_encoder is not None

    def lines(run: str) -> list[dict]:
        return [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]

    assert [(m["loss"], m.get("val_loss")) for m in lines("released")] == [(m["loss"], m.get("val_loss")) for m in lines("kept")]
    assert sum("val_loss" in m for m in lines("released")) == 2
    samples = sorted(p.name for p in (tmp_path / "released" / "samples").glob("*.mp4"))
    assert len(samples) == 4 and samples == sorted(p.name for p in (tmp_path / "kept" / "samples").glob("*.mp4"))

    # The same frames, compared before encoding: libx264's output for pictures this small (32x32) varies
    # from run to run in one process, even on one thread, where 48x80 and larger come out byte-identical.
    def frames(trainer: Trainer) -> torch.Tensor:
        return sample(trainer.family, list(config.sample_prompts), config.num_frames, config.height, config.width, num_steps=2)

    assert torch.equal(frames(released), frames(kept))
    prompts = list(config.sample_prompts)  # what was kept is what the encoder gives
    assert torch.allclose(released.family.embed_text(prompts), kept.family.encode_text(prompts), atol=1e-6)


def test_a_rerun_resumes_and_other_settings_are_refused(train_shards, latents, capsys):
    assert main(["precompute", "--shards", str(train_shards), "--out", str(latents), "--dtype", "float32", "--quiet"]) == 0
    assert "in 0 new shards" in capsys.readouterr().out
    assert main(["precompute", "--shards", str(train_shards), "--out", str(latents), "--quiet", "--set", "num_frames=13"]) == 2
    assert "other settings (num_frames: 9 -> 13, dtype: 'float32' -> 'float16')" in capsys.readouterr().err
    other = str(min(train_shards.glob("*.tar")))  # other input shards, whose names could collide
    assert main(["precompute", "--shards", other, "--out", str(latents), "--dtype", "float32", "--quiet"]) == 2
    assert "other settings (shards:" in capsys.readouterr().err


def test_latents_of_another_size_are_one_clear_line(latents, tmp_path, capsys):
    assert main(["--shards", str(latents), "--out", str(tmp_path / "run"), "--steps", "2", "--quiet", *COMMON, "num_frames=13"]) == 2
    err = capsys.readouterr().err
    assert "latent shards hold latents of shape (16, 3, 4, 4)" in err and "Traceback" not in err


def test_undecodable_samples_are_left_out(train_shards, tmp_path, capsys):
    good = next(iter(wds.WebDataset(str(min(train_shards.glob("*.tar"))), shardshuffle=False)))
    mixed = tmp_path / "in" / "mixed-000000.tar"
    mixed.parent.mkdir()
    write_shard(
        mixed,
        [Sample("bad", {"mp4": b"not a video", "txt": b"x"}), Sample(good["__key__"], {"mp4": good["mp4"], "txt": good["txt"]})],
    )
    assert main(["precompute", "--shards", str(mixed), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    assert "1 samples in 1 new shards (0 already done, 1 samples left out)" in capsys.readouterr().out
    keys = [s["__key__"] for s in wds.WebDataset(str(tmp_path / "out" / "mixed-000000.tar"), shardshuffle=False)]
    assert keys == [good["__key__"]]


def test_trim_padding():
    embedding = np.zeros((6, 2), np.float32)
    embedding[:3] = 1.0
    embedding[1] = 0.0  # an inner zero row stays
    assert trim_padding(embedding).shape == (3, 2)
    assert trim_padding(np.zeros((4, 2))).shape == (1, 2)
