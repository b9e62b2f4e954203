"""Aspect-ratio and length buckets: every clip trains at the shape nearest its own, not one crop.

A run's buckets are (num_frames, height, width) shapes made from its settings and what the model
takes: for each aspect of `bucket_aspects` (9:16 to 21:9 by default) the largest frame within the
pixel budget `height * width` whose sides are multiples of the model's (Wan: 16) and whose aspect
is nearest that one, unless even a clip of that exact aspect would lose more than
`bucket_max_crop` to it (small budgets leave few sizes); the configured `height x width` is
always one of them. Each size comes at
every frame count the model takes (Wan: 1 + 4k) from `bucket_min_frames` up to `num_frames`.

A clip goes to the size nearest its aspect and to the longest frame count it fills at the run's
frame step; it is resized to cover that size and centre-cropped, and a clip that would lose more
than `bucket_max_crop` of a side is skipped (`crop_too_large`), as is one too short for the
shortest bucket (`too_short`). The choice needs only the clip's width, height, frame count and
frame rate, which the shard's json gives, so a clip is decoded only once its bucket is known.

With `buckets=false` there is one bucket, the configured shape, and any crop is allowed: every
clip is resized to cover it and centre-cropped (the fixed-size behaviour).

    buckets = Buckets.for_run(config, frame_step=4, side_multiple=16)
    bucket = buckets.choose(width=854, height=480, total_frames=81, frame_step=1.0)  # 480x832x33
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from curate.errors import ConfigError

DEFAULT_ASPECTS = ["9:16", "2:3", "3:4", "1:1", "4:3", "3:2", "16:9", "21:9"]


class SkippedSample(ValueError):
    """A sample that cannot be trained on, and why in one word (`reason`, a key of the `skipped`
    counts in metrics.jsonl: too_short, crop_too_large, undecodable, held_out)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, order=True)
class Bucket:
    """One training shape."""

    num_frames: int
    height: int
    width: int

    @property
    def name(self) -> str:
        """The name metrics.jsonl's bucket_counts keys it by: "HxWxF"."""
        return f"{self.height}x{self.width}x{self.num_frames}"

    @classmethod
    def from_name(cls, name: str) -> Bucket:
        """The bucket `name` names."""
        height, width, num_frames = map(int, name.split("x"))
        return cls(num_frames, height, width)


@dataclass(frozen=True)
class Buckets:
    """A run's shapes and how much of a side a clip may lose to reach one (1.0: anything)."""

    shapes: tuple[Bucket, ...]
    max_crop: float = 1.0

    @classmethod
    def fixed(cls, num_frames: int, height: int, width: int) -> Buckets:
        """The one shape of a run without buckets: every clip covers it, whatever the crop."""
        return cls((Bucket(num_frames, height, width),))

    @classmethod
    def for_run(cls, config, frame_step: int, side_multiple: int) -> Buckets:
        """The buckets of `config` (a train.config.DataConfig) for a model that takes clips of
        1 + k * `frame_step` frames and sides that are multiples of `side_multiple`."""
        if not config.buckets:
            return cls.fixed(config.num_frames, config.height, config.width)
        budget = config.height * config.width
        sizes = {(config.height, config.width)}
        for aspect in map(parse_aspect, config.bucket_aspects):
            height, width = _size_for(aspect, budget, side_multiple)
            if crop_share(aspect, 1, height, width) <= config.bucket_max_crop:  # else it would hold no clip of its aspect
                sizes.add((height, width))
        frames = range(config.num_frames, config.bucket_min_frames - 1, -frame_step)
        return cls(tuple(sorted(Bucket(f, h, w) for h, w in sizes for f in frames)), config.bucket_max_crop)

    @property
    def sizes(self) -> list[tuple[int, int]]:
        """The distinct (height, width) of the shapes."""
        return sorted({(b.height, b.width) for b in self.shapes})

    def choose(self, width: int, height: int, total_frames: int, frame_step: float) -> Bucket:
        """The bucket of a clip shown at `width` x `height` with `total_frames` frames, trained
        every `frame_step` frames; SkippedSample when none fits."""
        size = min(self.sizes, key=lambda s: (abs(math.log(s[1] / s[0] * height / width)), -s[0] * s[1]))
        crop = crop_share(width, height, *size)
        if crop > self.max_crop:
            raise SkippedSample("crop_too_large", f"{width}x{height} would lose {crop:.0%} of a side to fit {size[1]}x{size[0]}")
        fits = [b for b in self.shapes if (b.height, b.width) == size and (b.num_frames - 1) * frame_step <= total_frames - 1]
        if not fits:
            shortest = min(b.num_frames for b in self.shapes)
            raise SkippedSample("too_short", f"{total_frames} frames; {shortest} needed at a step of {frame_step:g}")
        return max(fits)

    def portrait_of(self, height: int, width: int) -> tuple[int, int]:
        """The size nearest the transposed aspect of `height` x `width` (samples are drawn at
        both: the configured landscape size and this portrait one)."""
        return min(self.sizes, key=lambda s: (abs(math.log(s[1] / s[0] * width / height)), -s[0] * s[1]))


def crop_share(width: float, height: float, bucket_height: int, bucket_width: int) -> float:
    """The share of a side a `width` x `height` picture loses when scaled to cover the bucket
    (aspect kept) and centre-cropped to it."""
    ratio = (bucket_width / bucket_height) / (width / height)
    return 1 - min(ratio, 1 / ratio)


def parse_aspect(text) -> float:
    """Width over height of an aspect written "W:H" (e.g. "16:9"); ConfigError otherwise."""
    parts = text.split(":") if isinstance(text, str) else []
    try:
        width, height = (float(p) for p in parts)
        if width > 0 and height > 0:
            return width / height
    except ValueError:
        pass
    # YAML reads an unquoted 16:9 as the base-60 number 969.
    raise ConfigError(f"bucket_aspects: {text!r} is not an aspect \"W:H\" (quote them in YAML: '16:9')")


def _size_for(aspect: float, budget: int, multiple: int) -> tuple[int, int]:
    """The (height, width) nearest `aspect` among the largest frames within `budget` pixels
    whose sides are multiples of `multiple` (for each height, the widest width that fits)."""
    candidates = []
    for height in range(multiple, budget // multiple + 1, multiple):
        width = budget // height // multiple * multiple
        candidates.append((abs(math.log(width / height / aspect)), -height * width, height, width))
    _, _, height, width = min(candidates)
    return height, width
