"""The CLIP image encoder and the LAION aesthetic head: where their weights come from and how they load.

Real models: open_clip builds the architecture (`aesthetic.model`, e.g. ViT-L-14) and loads the
weights named by `aesthetic.pretrained`: an open_clip tag (found in the Hugging Face cache, or
downloaded when the hub answers), a local checkpoint file, or "" for random weights (benchmarks).
The head is LAION's improved-aesthetic-predictor MLP, read from a local file or from a URL cached
in torch hub's folder. Offline, nothing waits on retries: the caches are searched first, then one
short probe says whether the server answers, and a miss becomes a one-line `ModelUnavailable`.

`aesthetic.model=tiny` builds a small random CLIP and head from config, seeded, with no download,
so tests and `--models tiny` run every code path offline.
"""

from __future__ import annotations

import contextlib
import os
import urllib.parse
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from curate.config import AestheticConfig
from curate.errors import ModelUnavailable
from curate.models import hub
from curate.models.hub import hub_offline, quiet_logs, reason, resolve_device, seeded

TINY = "tiny"
# A small ViT (16 patches of 16 px at 64x64) and a one-layer text tower that is never run.
_TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "patch_size": 16, "width": 64, "layers": 2, "head_width": 32},
    "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1},
}
_SEED = 0
_WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")
_OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
_OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class Preprocess:
    """How a frame becomes model input, from open_clip's `visual.preprocess_cfg`."""

    height: int
    width: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize_mode: str = "shortest"  # shortest: scale, then centre crop; longest: scale, then pad; squash
    interpolation: str = "bicubic"
    fill_color: int = 0

    @classmethod
    def from_open_clip(cls, cfg: dict) -> Preprocess:
        size = cfg.get("size", 224)
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        return cls(
            height=int(height),
            width=int(width),
            mean=tuple(cfg.get("mean", _OPENAI_MEAN)),
            std=tuple(cfg.get("std", _OPENAI_STD)),
            resize_mode=cfg.get("resize_mode", "shortest"),
            interpolation=cfg.get("interpolation", "bicubic"),
            fill_color=int(cfg.get("fill_color", 0)),
        )


class AestheticHead(nn.Module):
    """LAION improved-aesthetic-predictor: linear layers with dropout between them (no activation,
    as published), on L2-normalised CLIP image embeddings. The state-dict keys are those of the
    published `sac+logos+ava1-l14-linearMSE.pth`: layers.{0,2,4,6,7}.{weight,bias}."""

    def __init__(self, dim: int):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(dim, 1024),
            nn.Dropout(0.2),
            nn.Linear(1024, 128),
            nn.Dropout(0.2),
            nn.Linear(128, 64),
            nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.layers(embeddings).squeeze(-1)


class AestheticModel:
    """The image encoder and the head on one device: frames in, unit-norm embeddings and scores out."""

    def __init__(self, visual: nn.Module, head: AestheticHead, preprocess: Preprocess, device: torch.device, dim: int):
        self.device = device
        self.visual = visual.eval().to(device)
        self.head = head.eval().to(device)  # kept in fp32: it is tiny, and scores compare to thresholds
        self.preprocess = preprocess
        self.dim = dim
        # Normalisation folded onto the 0-255 scale, so uint8 frames go to the device as they are
        # (a quarter of the bytes of float32) and become model input there in one pass.
        self._mean = torch.tensor(preprocess.mean, device=device).view(1, -1, 1, 1) * 255
        self._std = torch.tensor(preprocess.std, device=device).view(1, -1, 1, 1) * 255

    @torch.inference_mode()
    def __call__(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 frames (N, height, width, 3) → (embeddings (N, dim) float32, scores (N,) float32)."""
        x = torch.from_numpy(pixels).to(self.device, non_blocking=True)
        x = x.permute(0, 3, 1, 2).float().contiguous()
        x.sub_(self._mean).div_(self._std)
        embeddings, scores = self.forward(x)
        return embeddings.cpu().numpy(), scores.cpu().numpy()

    @torch.inference_mode()
    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Preprocessed float images (N, 3, H, W) on the device → (unit-norm embeddings, scores)."""
        with self._autocast():
            features = self.visual(images)
        embeddings = F.normalize(features.float(), dim=-1)
        return embeddings, self.head(embeddings)

    def _autocast(self):
        if self.device.type != "cuda":
            return contextlib.nullcontext()  # fp32 on CPU: bf16 there is slower on most CPUs
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)


def load_aesthetic_model(config: AestheticConfig) -> AestheticModel:
    """Build the encoder and head `config` names on its device (once per worker)."""
    device = resolve_device(config.device, "aesthetic.device")
    if config.model == TINY:
        visual, preprocess = _tiny_visual()
    else:
        visual, preprocess = _open_clip_visual(config.model, config.pretrained)
    dim = embedding_dim(config)
    path = head_file(config)
    head = read_head(path, dim, config.model) if path else random_head(dim)
    return AestheticModel(visual, head, preprocess, device, dim)


def fetch_weights(config: AestheticConfig) -> None:
    """Find or download every weight file `config` needs and check that they fit together, without
    building the model: the main process runs this once, so workers find everything cached and a
    missing model fails once, in one line."""
    resolve_device(config.device, "aesthetic.device")
    dim = embedding_dim(config)
    if config.model != TINY and config.pretrained:
        if _is_local(config.pretrained):
            _require_file(config.pretrained, config.model)
        else:
            import open_clip

            _ensure_checkpoint(config.model, config.pretrained, _tag_cfg(open_clip, config.model, config.pretrained))
    path = head_file(config)
    if path:
        read_head(path, dim, config.model)


def embedding_dim(config: AestheticConfig) -> int:
    """The size of the model's image embeddings, from its architecture config (no weights)."""
    if config.model == TINY:
        return _TINY_CLIP["embed_dim"]
    import open_clip

    _check_model_name(open_clip, config.model)
    return int(open_clip.get_model_config(config.model)["embed_dim"])


# -- the image encoder ----------------------------------------------------------------------


def _tiny_visual() -> tuple[nn.Module, Preprocess]:
    import open_clip

    with seeded(_SEED):
        model = open_clip.CLIP(**_TINY_CLIP)
    size = _TINY_CLIP["vision_cfg"]["image_size"]
    return model.visual, Preprocess(size, size, _OPENAI_MEAN, _OPENAI_STD)


def _open_clip_visual(name: str, pretrained: str) -> tuple[nn.Module, Preprocess]:
    """open_clip's image tower for `name` with the weights `pretrained` names, and its preprocessing.
    The text tower is dropped: the stage never runs it."""
    import open_clip

    _check_model_name(open_clip, name)
    options: dict = {}
    if not pretrained:
        source = None  # random weights: the real architecture, for benchmarks
    elif _is_local(pretrained):
        source = _require_file(pretrained, name)
    else:
        tag_cfg = _tag_cfg(open_clip, name, pretrained)
        _ensure_checkpoint(name, pretrained, tag_cfg)
        source = pretrained  # the tag, not the file: open_clip then applies the tag's preprocessing
        # OpenAI's weights were trained with QuickGELU; the plain model names use nn.GELU and
        # open_clip 3 only warns about the mismatch, which would quietly skew every embedding.
        options["force_quick_gelu"] = bool(tag_cfg.get("quick_gelu", False))
    try:
        with hub_offline(), quiet_logs():  # the checkpoint is local by now: never wait on the network
            model, _, _ = open_clip.create_model_and_transforms(name, pretrained=source, **options)
    except Exception as exc:
        raise ModelUnavailable(f"cannot load CLIP model {name} from {source!r}: {reason(exc)}") from None
    visual = model.visual
    del model
    return visual, Preprocess.from_open_clip(visual.preprocess_cfg)


def _check_model_name(open_clip, name: str) -> None:
    if name not in open_clip.list_models():
        raise ModelUnavailable(
            f"unknown open_clip model {name!r} in aesthetic.model (e.g. ViT-L-14, ViT-B-32, or tiny; open_clip.list_models() lists them)"
        )


def _tag_cfg(open_clip, name: str, tag: str) -> dict:
    cfg = open_clip.get_pretrained_cfg(name, tag)
    if not cfg:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(name)) or "none"
        raise ModelUnavailable(f"aesthetic.pretrained={tag!r} is neither a file nor an open_clip tag of {name} (tags: {tags})")
    return cfg


def _ensure_checkpoint(name: str, tag: str, cfg: dict) -> None:
    """Make sure the tag's weights are in the local cache: look there first (no network), then
    download only if one quick probe shows the server answers."""
    import open_clip

    if _cached_checkpoint(open_clip, cfg):
        return
    how = _how_to_provide(name, tag, cfg)
    what = f"cannot load CLIP model {name} (pretrained {tag!r}): weights not in the local cache and"
    if hub.hub_offline_requested() and cfg.get("hf_hub"):
        raise ModelUnavailable(f"{what} HF_HUB_OFFLINE is set; {how}")
    url = hub.hub_endpoint() if cfg.get("hf_hub") else cfg.get("url", "")
    if not hub.reachable(url):
        raise ModelUnavailable(f"{what} {urllib.parse.urlparse(url).hostname} is unreachable; {how}")
    try:
        with quiet_logs():
            open_clip.download_pretrained(cfg)
    except Exception as exc:
        raise ModelUnavailable(f"cannot download CLIP model {name} (pretrained {tag!r}): {reason(exc)}; {how}") from None


def _cached_checkpoint(open_clip, cfg: dict) -> bool:
    """Whether open_clip would find the tag's weights without the network."""
    if cfg.get("file"):
        return os.path.isfile(cfg["file"])
    if cfg.get("hf_hub") and open_clip.pretrained.has_hf_hub():
        try:
            with hub_offline(), quiet_logs():
                return bool(open_clip.download_pretrained(cfg))
        except Exception:  # a cache miss, whatever huggingface_hub calls it
            return False
    url = cfg.get("url", "")  # open_clip's own cache for URL-only tags
    return bool(url) and os.path.isfile(os.path.join(os.path.expanduser("~/.cache/clip"), os.path.basename(url)))


def _how_to_provide(name: str, tag: str, cfg: dict) -> str:
    # A local file carries no tag, so QuickGELU must then come from the model name.
    file_model = f"{name}-quickgelu" if cfg.get("quick_gelu") and not name.endswith("-quickgelu") else name
    local = f"--set aesthetic.model={file_model} aesthetic.pretrained=/path/open_clip_model.safetensors"
    if cfg.get("hf_hub"):
        # 'org/repo/' names the repo's default file, 'org/repo/file' a specific one (open_clip's convention).
        parts = cfg["hf_hub"].split("/")
        repo_id, filename = "/".join(parts[:2]), "/".join(parts[2:]) or "open_clip_pytorch_model.bin"
        return (
            f"run `hf download {repo_id} {filename}` where the hub can be reached, into the cache under HF_HOME "
            f"(then found offline, also with HF_HUB_OFFLINE=1), or point at a local file: {local}"
        )
    return f"download {cfg.get('url')} into ~/.cache/clip/, or point at a local file: {local}"


def _require_file(path: str, name: str) -> str:
    if not os.path.isfile(path):
        raise ModelUnavailable(f"CLIP checkpoint for {name} not found: {path} (aesthetic.pretrained)")
    return path


def _is_local(source: str) -> bool:
    return os.sep in source or source.endswith(_WEIGHT_SUFFIXES) or os.path.isfile(source)


# -- the aesthetic head ---------------------------------------------------------------------


def head_file(config: AestheticConfig) -> str | None:
    """The local file of the head `config` names (downloaded into torch hub's cache when it is a
    URL), or None for a seeded random head: `aesthetic.head=""`, or the tiny model with a URL."""
    source = config.head
    if not source or (config.model == TINY and _is_url(source)):
        return None
    if _is_url(source):
        return _download_head(source)
    if not os.path.isfile(source):
        raise ModelUnavailable(f"aesthetic head file not found: {source} (aesthetic.head)")
    return source


def random_head(dim: int, seed: int = _SEED) -> AestheticHead:
    """A seeded random head, its output centred on 5 so the default threshold keeps some clips
    and drops others with tiny models."""
    with seeded(seed):
        head = AestheticHead(dim)
    with torch.no_grad():
        head.layers[-1].bias.add_(5.0)
    return head


def read_head(path: str, dim: int | None = None, model: str = "the CLIP model") -> AestheticHead:
    """Load an improved-aesthetic-predictor state dict; check it takes `dim`-d embeddings."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelUnavailable(f"cannot read aesthetic head {path}: {reason(exc)} (aesthetic.head)") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # a training checkpoint around the weights
    first = state.get("layers.0.weight") if isinstance(state, dict) else None
    if not isinstance(first, torch.Tensor) or first.ndim != 2:
        raise ModelUnavailable(f"{path} is not an improved-aesthetic-predictor head (no layers.0.weight) (aesthetic.head)")
    if dim is not None and first.shape[1] != dim:
        raise ModelUnavailable(
            f"aesthetic head {path} takes {first.shape[1]}-d embeddings but {model} gives {dim}-d: "
            "use the head trained on this CLIP model (aesthetic.head)"
        )
    head = AestheticHead(first.shape[1])
    try:
        head.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelUnavailable(f"aesthetic head {path} does not fit the LAION layout: {reason(exc)}") from None
    return head


def _download_head(url: str) -> str:
    name = os.path.basename(urllib.parse.unquote(urllib.parse.urlparse(url).path))
    target = os.path.join(torch.hub.get_dir(), "checkpoints", name)
    if os.path.isfile(target):
        return target
    how = f"download {url} and --set aesthetic.head=/path/{name} (or copy it to {target}; TORCH_HOME moves that cache)"
    if not hub.reachable(url):
        host = urllib.parse.urlparse(url).hostname
        raise ModelUnavailable(f"cannot fetch the aesthetic head: {host} is unreachable; {how}")
    try:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        torch.hub.download_url_to_file(url, target, progress=False)  # writes a temp file, then renames
    except Exception as exc:
        raise ModelUnavailable(f"cannot fetch the aesthetic head: {reason(exc)}; {how}") from None
    return target


def _is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))
