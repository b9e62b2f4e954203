"""Synthetic sample videos with known shot boundaries, for the demo, the tests and the benchmarks.

Each video is a list of shots joined by transitions. A shot looks at a textured "world" through
a moving camera, with an optional moving object, sensor noise, and events that must *not* be taken
for cuts (a flash, something passing close to the lens, a fast pan). Every video comes with its
ground truth: the first frame of each new shot after a hard cut, and the frame span of each
gradual transition.

Run `python -m curate.synthetic DIR` to write the demo set.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

from curate.x264 import repeatable


@dataclass
class Shot:
    """One continuous shot: `num_frames` of a random world seen through a moving camera."""

    num_frames: int
    seed: int
    pan: tuple[float, float] = (0.0, 0.0)  # camera motion in pixels per frame (x, y)
    moving_object: bool = True
    static: bool = False  # one frozen picture (plus noise): a shot the motion filter should drop
    flash_at: int | None = None  # frame index (within the shot) of a 2-frame flash
    occlusion_at: int | None = None  # frame index where a dark object sweeps past the lens
    noise: float = 2.0
    fresh_noise: bool = False  # new noise in every frame, as from a real sensor (default: 4 cycling)
    object_scale: float = 1.0  # size of the moving object (1: a fifth of the height, a sixth of the width)
    object_speed: float = 1.0  # speed of the moving object, relative to its random default
    typing: bool = False  # a screen recording: a frozen picture where a line of text grows, caret blinking
    glitch_at: int | None = None  # frame index of 2 frames of decoder garbage (random coloured blocks)
    object_texture: bool = False  # a textured object (a flat one is seen moving by codecs at its edges only)
    sign: str | None = None  # words painted on a board in the middle of the world: scene text, panning with it


@dataclass
class Join:
    """How a shot is joined to the next one: a hard cut, a dissolve or a fade through black."""

    kind: str = "cut"  # "cut" | "dissolve" | "fade"
    num_frames: int = 0  # dissolve length, or fade-out + fade-in length


@dataclass
class Truth:
    """Where the boundaries are, in decode-order frame indices."""

    num_frames: int
    hard_cuts: list[int] = field(default_factory=list)
    gradual: list[tuple[int, int]] = field(default_factory=list)  # [first, last] frames inside

    @property
    def cut_frames(self) -> list[int]:
        """The contract's cut_frames: hard cut positions and gradual transitions' middle frames."""
        return sorted(self.hard_cuts + [(a + b + 1) // 2 for a, b in self.gradual])


class _World:
    """A textured picture larger than the frame, which the camera pans across."""

    def __init__(self, seed: int, width: int, height: int, margin: int):
        rng = np.random.default_rng(seed)
        world_h, world_w = height + 2 * margin, width + 2 * margin
        base = _smooth_noise(rng, world_h, world_w, cells=6) * 150 + 50
        detail = _smooth_noise(rng, world_h, world_w, cells=40) * 60 - 30
        picture = base + detail
        for _ in range(12):  # hard-edged shapes give texture that moves visibly
            y, x = rng.integers(0, world_h), rng.integers(0, world_w)
            rh, rw = rng.integers(height // 10, height // 3), rng.integers(width // 10, width // 3)
            picture[y : y + rh, x : x + rw] = rng.uniform(0, 255, 3)
        self.picture = np.clip(picture, 0, 255).astype(np.float32)
        self.object_colour = rng.uniform(0, 255, 3).astype(np.float32)
        self.object_start = rng.uniform(0.1, 0.4, 2)
        self.object_speed = rng.uniform(0.004, 0.01, 2) * rng.choice([-1, 1], 2)


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Random colour field with about `cells` blobs across, values in [0, 1]."""
    grid = rng.random((cells + 2, cells + 2, 3))
    ys = np.linspace(0, cells, height)
    xs = np.linspace(0, cells, width)
    y0, x0 = ys.astype(int), xs.astype(int)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x0 + 1] * fx
    bottom = grid[y0 + 1][:, x0] * (1 - fx) + grid[y0 + 1][:, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _bounce(position: float) -> float:
    """Fold a position onto [0, 1] back and forth, so objects turn at the edges instead of jumping."""
    return 1 - abs(position % 2 - 1)


def _render_shot(shot: Shot, width: int, height: int):
    """Yield the shot's frames as float32 RGB arrays."""
    margin = int(max(abs(shot.pan[0]), abs(shot.pan[1])) * shot.num_frames) + 8
    world = _World(shot.seed, width, height, margin)
    if shot.sign:
        _paint_sign(world.picture, shot.sign, height)
    rng = np.random.default_rng(shot.seed + 1)
    noise_bank = rng.normal(0, shot.noise, (4, height, width, 1)).astype(np.float32)
    extra = np.random.default_rng(shot.seed + 2)  # for the optional effects: defaults stay as they were
    oh, ow = max(2, int(height / 5 * shot.object_scale)), max(2, int(width / 6 * shot.object_scale))
    look = world.object_colour
    if shot.object_texture:
        texture = 0.9 * _smooth_noise(extra, oh, ow, cells=4) + 0.4 * _smooth_noise(extra, oh, ow, cells=12)
        look = world.object_colour * (0.3 + texture)
    for i in range(shot.num_frames):
        t = 0 if shot.static or shot.typing else i
        x = int(round(margin + shot.pan[0] * (t - shot.num_frames / 2)))
        y = int(round(margin + shot.pan[1] * (t - shot.num_frames / 2)))
        frame = world.picture[y : y + height, x : x + width].copy()
        if shot.moving_object and not (shot.static or shot.typing):
            speed = world.object_speed * shot.object_speed
            cy = int(_bounce(world.object_start[0] + speed[0] * t) * 0.8 * height)
            cx = int(_bounce(world.object_start[1] + speed[1] * t) * 0.8 * width)
            region = frame[cy : cy + oh, cx : cx + ow]
            region[:] = look if look.ndim == 1 else look[: region.shape[0], : region.shape[1]]
        if shot.typing:
            _draw_typing(frame, i)
        if shot.glitch_at is not None and 0 <= i - shot.glitch_at < 2:
            blocks = extra.uniform(0, 255, (-(-height // 16), -(-width // 16), 3)).astype(np.float32)
            frame = np.repeat(np.repeat(blocks, 16, axis=0), 16, axis=1)[:height, :width]
        if shot.occlusion_at is not None and 0 <= i - shot.occlusion_at < 10:
            # A dark object close to the lens crosses the frame in 10 frames, covering most of it.
            left = int((i - shot.occlusion_at - 4) / 6 * width)
            frame[:, max(0, left) : max(0, left + int(0.8 * width))] *= 0.15
        if shot.flash_at is not None and 0 <= i - shot.flash_at < 2:
            frame = frame * 0.4 + 170
        if shot.fresh_noise:
            frame += extra.normal(0, shot.noise, (height, width, 1)).astype(np.float32)
        else:
            frame += noise_bank[i % len(noise_bank)]
        yield frame


def _draw_typing(frame: np.ndarray, i: int) -> None:
    """A line of text typed at four characters a second (at 24 fps) with a caret blinking twice a
    second: what changes in a screen recording of someone typing."""
    height, width = frame.shape[:2]
    char_w, char_h = max(1, width // 64), max(2, height // 30)
    top, left = height // 3, width // 10
    typed = min(i // 6, (width - 2 * left) // char_w - 1)
    for c in range(typed):  # glyphs: dark blocks, every fourth one a space
        if c % 4 != 3:
            frame[top : top + char_h, left + c * char_w : left + c * char_w + char_w - 1] = 20.0
    if (i // 12) % 2 == 0:
        caret = left + typed * char_w
        frame[top - 1 : top + char_h + 1, caret : caret + max(1, char_w // 4)] = 10.0


def _font(size: int):
    """Pillow's bundled font at `size` pixels (no font file needed on any machine)."""
    from PIL import ImageFont

    return ImageFont.load_default(size=max(6, size))


def _paint_sign(picture: np.ndarray, words: str, height: int) -> None:
    """A light board with dark words in the middle of the world picture (float RGB, changed in place)."""
    from PIL import Image, ImageDraw

    world_h, world_w = picture.shape[:2]
    font = _font(height // 9)
    left, top, right, bottom = font.getbbox(words)
    pad = height // 30
    board = Image.new("RGB", (right - left + 2 * pad, bottom - top + 2 * pad), (225, 215, 190))
    ImageDraw.Draw(board).text((pad - left, pad - top), words, font=font, fill=(30, 25, 20))
    y, x = (world_h - board.height) // 2, (world_w - board.width) // 2
    picture[y : y + board.height, x : x + board.width] = np.asarray(board, np.float32)


SUBTITLES = (
    "We should have left before the rain.",
    "I told you the bridge was closed.",
    "Nobody listens to me anymore.",
    "Then we take the long road home.",
    "It will be dark when we arrive.",
    "Keep your eyes on the river.",
)
OVERLAYS = ("subtitles", "title", "ticker", "logo")  # what `add_overlay` draws


def add_overlay(frames, kind: str, fps: float):
    """Burn text into rendered uint8 RGB frames, as editors do: "subtitles" (a new line every
    second, bottom centre), "title" (a big title in the middle), "ticker" (a dark bar at the bottom
    with text scrolling left) or "logo" (a channel name in the top-right corner)."""
    from PIL import Image, ImageDraw

    for i, frame in enumerate(frames):
        image = Image.fromarray(frame)
        draw = ImageDraw.Draw(image)
        width, height = image.size
        if kind == "subtitles":
            font = _font(height // 14)
            line = SUBTITLES[int(i / fps) % len(SUBTITLES)]
            draw.text((width // 2, height - height // 10), line, font=font, anchor="ms", fill="white", stroke_width=2, stroke_fill="black")
        elif kind == "title":
            font = _font(height // 8)
            draw.text((width // 2, height // 2), "THE LONG ROAD", font=font, anchor="mm", fill=(250, 240, 200), stroke_width=2,
                      stroke_fill=(20, 20, 20))  # fmt: skip
        elif kind == "ticker":
            bar = height - height // 9
            draw.rectangle([0, bar, width, height], fill=(20, 30, 90))
            font = _font(height // 14)
            text = "MARKETS CLOSE HIGHER  +++  STORM WARNING FOR THE COAST  +++  ELECTION RESULTS TONIGHT  +++  "
            offset = int(i * width / (4 * fps)) % int(font.getlength(text))
            draw.text((width // 20 - offset, (bar + height) // 2), text * 3, font=font, anchor="lm", fill="white")
        elif kind == "logo":
            font = _font(height // 14)
            box = draw.textbbox((width - width // 40, height // 30), "NEWS 24", font=font, anchor="ra")
            draw.rectangle([box[0] - 3, box[1] - 3, box[2] + 3, box[3] + 3], fill=(200, 20, 20))
            draw.text((width - width // 40, height // 30), "NEWS 24", font=font, anchor="ra", fill="white")
        else:
            raise ValueError(f"unknown overlay {kind!r} (known: {', '.join(OVERLAYS)})")
        yield np.asarray(image)


def render(shots: list[Shot], joins: list[Join], width: int, height: int):
    """Yield uint8 RGB frames of the whole video; `truth(shots, joins)` gives its boundaries."""
    assert len(joins) == len(shots) - 1
    pending: list[np.ndarray] = []  # the previous shot's tail, to blend into this shot's head
    for index, shot in enumerate(shots):
        join_in = joins[index - 1] if index else None
        join_out = joins[index] if index < len(joins) else None
        incoming, pending = pending, []
        tail = _tail_length(join_out)
        for i, frame in enumerate(_render_shot(shot, width, height)):
            if join_in is not None and i < _head_length(join_in):
                frame = _apply_join(join_in, incoming[i] if incoming else None, frame, i)
            if i >= shot.num_frames - tail:
                pending.append(frame)
            else:
                yield np.clip(frame, 0, 255).astype(np.uint8)
        if join_out is not None and join_out.kind == "fade":
            # Fade the held tail out to black; the next shot fades in from black on its own.
            for j, frame in enumerate(pending):
                yield np.clip(frame * (1 - (j + 1) / (len(pending) + 1)), 0, 255).astype(np.uint8)
            pending = []


def in_frame(frames, width: int, height: int, box: tuple[int, int, int, int], colour: float = 0.0):
    """Show each rendered picture inside a `width` x `height` frame at `box` (x, y, w, h; the
    pictures are that size), the rest filled with `colour`: letterbox, pillarbox or windowbox bars."""
    x, y, w, h = box
    for frame in frames:
        canvas = np.full((height, width, 3), colour, np.uint8)
        canvas[y : y + h, x : x + w] = frame[:h, :w]
        yield canvas


def fade_edges(frames, num_frames: int, fade_in: int = 0, fade_out: int = 0, colour: float = 0.0):
    """Fade a rendered video in from `colour` over its first `fade_in` frames and out to it over
    its last `fade_out` (`num_frames` in all), as films open and close. `edge_fades` gives the
    frames that belong to no shot."""
    for i, frame in enumerate(frames):
        level = min(1.0, (i + 1) / (fade_in + 1), (num_frames - i) / (fade_out + 1))
        yield np.clip(colour + (frame.astype(np.float32) - colour) * level, 0, 255).astype(np.uint8)


def edge_fades(num_frames: int, fade_in: int = 0, fade_out: int = 0) -> list[tuple[int, int]]:
    """[first, last] frames of the fades that `fade_edges` adds: inside no shot, boundaries of none."""
    spans = [(0, fade_in - 1)] if fade_in else []
    return spans + ([(num_frames - fade_out, num_frames - 1)] if fade_out else [])


def _tail_length(join: Join | None) -> int:
    if join is None or join.kind == "cut":
        return 0
    return join.num_frames if join.kind == "dissolve" else join.num_frames // 2


def _head_length(join: Join) -> int:
    if join.kind == "dissolve":
        return join.num_frames
    return join.num_frames - join.num_frames // 2 if join.kind == "fade" else 0


def _apply_join(join: Join, previous: np.ndarray | None, frame: np.ndarray, i: int) -> np.ndarray:
    if join.kind == "dissolve":
        alpha = (i + 1) / (join.num_frames + 1)
        return previous * (1 - alpha) + frame * alpha
    return frame * ((i + 1) / (_head_length(join) + 1))  # fade in from black


def truth(shots: list[Shot], joins: list[Join]) -> Truth:
    """The boundaries of `render(shots, joins, ...)`, in output frame indices."""
    result = Truth(num_frames=0)
    position = 0
    for index, shot in enumerate(shots):
        join_in = joins[index - 1] if index else None
        length = shot.num_frames - _tail_length(joins[index] if index < len(joins) else None)
        if join_in is not None and join_in.kind == "cut":
            result.hard_cuts.append(position)
        elif join_in is not None and join_in.kind == "dissolve":
            result.gradual.append((position, position + join_in.num_frames - 1))
        elif join_in is not None and join_in.kind == "fade":
            fade_out = join_in.num_frames // 2
            result.gradual.append((position - fade_out, position + _head_length(join_in) - 1))
        if index < len(joins) and joins[index].kind == "fade":
            length += joins[index].num_frames // 2  # the faded-out tail is still emitted here
        position += length
    result.num_frames = position
    return result


def write_video(
    path: str | Path,
    frames,
    fps: int = 24,
    codec: str = "libx264",
    options: dict | None = None,
    faststart: bool = False,
    rotation: int = 0,
) -> int:
    """Encode uint8 RGB frames to `path` (written under a temporary name, then renamed).

    `faststart` puts the mp4 index first, so a truncated copy still decodes up to the cut.
    `rotation` (degrees counter-clockwise) goes into the display matrix, as phones record: the
    frames are stored as given, and players turn them."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    count = 0
    with av.open(str(tmp), mode="w", options={"movflags": "faststart"} if faststart else {}) as container:
        stream = None
        for frame in frames:
            if stream is None:
                options = options or {"preset": "veryfast", "crf": "20"}
                # The same bytes on every run: tests and the demo compare what the stages make of them.
                stream = container.add_stream(codec, rate=fps, options=repeatable(options) if codec == "libx264" else options)
                stream.height, stream.width = frame.shape[:2]
                stream.pix_fmt = "yuv420p"
                if rotation:
                    stream.set_display_rotation(rotation)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
            count += 1
        if stream is not None:
            for packet in stream.encode():
                container.mux(packet)
    os.replace(tmp, path)
    return count


def make_video(path, shots: list[Shot], joins: list[Join], width=320, height=180, fps=24, overlay: str | None = None, **kwargs) -> Truth:
    """Render and encode a video (with text burned in by `add_overlay` when `overlay` names a kind);
    return its ground truth."""
    expected = truth(shots, joins)
    frames = render(shots, joins, width, height)
    if overlay:
        frames = add_overlay(frames, overlay, fps)
    written = write_video(path, frames, fps=fps, **kwargs)
    assert written == expected.num_frames, (written, expected.num_frames)
    return expected


def edited_video(seed: int, num_shots: int = 6, fps: int = 24) -> tuple[list[Shot], list[Join]]:
    """A random edit: shots of 2-6 s with mixed camera motion, joined by cuts, dissolves and fades."""
    rng = np.random.default_rng(seed)
    shots = []
    for i in range(num_shots):
        kind = rng.choice(["still", "pan", "fast_pan", "object"])
        pan = {"still": (0.0, 0.0), "pan": tuple(rng.uniform(-2, 2, 2)), "fast_pan": (rng.choice([-1, 1]) * rng.uniform(10, 16), 0.0)}
        shots.append(
            Shot(
                num_frames=int(rng.integers(2 * fps, 6 * fps)),
                seed=seed * 100 + i,
                pan=pan.get(kind, (0.0, 0.0)),
                moving_object=kind == "object" or rng.random() < 0.5,
                flash_at=int(rng.integers(10, 30)) if rng.random() < 0.2 else None,
                occlusion_at=int(rng.integers(10, 30)) if rng.random() < 0.2 else None,
            )
        )
    joins = [Join(*rng.choice([("cut", 0), ("dissolve", 16), ("fade", 16)], p=[0.5, 0.35, 0.15]).tolist()) for _ in range(num_shots - 1)]
    joins = [Join(j.kind, int(j.num_frames)) for j in joins]
    return shots, joins


def moving_dissolve(seed: int, fps: int = 24) -> tuple[list[Shot], list[Join]]:
    """Two 5-s shots joined by one dissolve of 16, 24, 32 or 48 frames, at least one camera in
    motion: each still, panning slowly (1-2 pixels a frame at 320x180, any direction) or fast
    (5-12 pixels a frame, sideways), with its moving object. Between moving shots the frames
    either side of a dissolve change as the dissolve does, and a blend's middle is no blend of
    far ends that have moved on: the hardest dissolves for the picture tests."""
    rng = np.random.default_rng(seed)

    def camera() -> tuple[float, float]:
        kind = rng.choice(["still", "slow", "fast"], p=[0.2, 0.4, 0.4])
        if kind == "slow":
            angle, speed = rng.uniform(0, 2 * np.pi), rng.uniform(1, 2)
            return float(speed * np.cos(angle)), float(speed * np.sin(angle))
        return (float(rng.choice([-1, 1]) * rng.uniform(5, 12)), 0.0) if kind == "fast" else (0.0, 0.0)

    pans = [camera(), camera()]
    while pans == [(0.0, 0.0), (0.0, 0.0)]:
        pans = [camera(), camera()]
    shots = [Shot(5 * fps, seed * 100 + 50 + i, pan=pan) for i, pan in enumerate(pans)]
    return shots, [Join("dissolve", int(rng.choice([16, 24, 32, 48])))]


def slideshow(num_stills: int, hold_frames: int, seed: int = 0) -> tuple[list[Shot], list[Join]]:
    """Still pictures (with sensor noise) each held for `hold_frames`, joined by hard cuts."""
    shots = [Shot(hold_frames, seed + i, static=True, moving_object=False, fresh_noise=True) for i in range(num_stills)]
    return shots, [Join("cut") for _ in range(num_stills - 1)]


def demo_set(folder: str | Path, width: int = 320, height: int = 180, fps: int = 24) -> dict[str, Truth]:
    """The demo's sample videos: edits with cuts, dissolves and fades, camera motion, a static
    shot, a long take, a film whose black bars change at a cut, a phone video recorded sideways,
    a subtitled pan past a sign (the text stage drops it for its subtitles, not for the sign), and
    one damaged file."""
    folder = Path(folder)
    s = fps
    videos = {
        "cuts_and_dissolves.mp4": (
            [Shot(4 * s, 1), Shot(3 * s, 2, pan=(1.5, 0.5)), Shot(4 * s, 3), Shot(3 * s, 4, pan=(-1.0, 0))],
            [Join("cut"), Join("dissolve", 16), Join("cut")],
        ),
        "fades_and_static.mp4": (
            [Shot(3 * s, 5, static=True, moving_object=False), Shot(4 * s, 6, pan=(0.8, 0)), Shot(3 * s, 7)],
            [Join("fade", 24), Join("dissolve", 16)],
        ),
        "pan_flash_occlusion.mp4": (
            [Shot(5 * s, 8, pan=(14.0, 0), flash_at=40), Shot(4 * s, 9, occlusion_at=30), Shot(3 * s, 10, pan=(0, 1.0))],
            [Join("cut"), Join("cut")],
        ),
        "long_take.mp4": ([Shot(23 * s, 11, pan=(0.5, 0.2))], []),
    }
    truths = {}
    for name, (shots, joins) in videos.items():
        if not (folder / name).exists():
            make_video(folder / name, shots, joins, width, height, fps)
        truths[name] = truth(shots, joins)
    film = folder / "letterbox_then_pillarbox.mp4"  # black bars that change at the cut: cropped per clip
    if not film.exists():
        wide, narrow = (width, width * 9 // 21 // 2 * 2), (height * 4 // 3 // 2 * 2, height)
        boxes = [(0, (height - wide[1]) // 2, *wide), ((width - narrow[0]) // 2, 0, *narrow)]
        shots = [Shot(4 * s, 13, pan=(1.0, 0)), Shot(4 * s, 14, pan=(0, 0.5))]
        parts = [in_frame(render([shot], [], *box[2:]), width, height, box) for shot, box in zip(shots, boxes, strict=True)]
        write_video(film, (frame for part in parts for frame in part), fps=fps)
    truths[film.name] = truth([Shot(4 * s, 13), Shot(4 * s, 14)], [Join("cut")])
    phone = folder / "phone_sideways.mp4"  # stored landscape, shown portrait: packed upright
    shots, joins = [Shot(3 * s, 12, pan=(0.6, 0.3))], []
    if not phone.exists():
        make_video(phone, shots, joins, width, height, fps, rotation=90)
    truths[phone.name] = truth(shots, joins)
    subtitled = folder / "subtitled.mp4"
    shots, joins = [Shot(5 * s, 13, pan=(-1.0, 0), sign="OPEN")], []
    if not subtitled.exists():
        make_video(subtitled, shots, joins, width, height, fps, overlay="subtitles")
    truths[subtitled.name] = truth(shots, joins)
    broken = folder / "damaged.mp4"
    if not broken.exists():  # a download cut short: the first part still decodes
        whole = folder / ".whole.mp4"
        shots, joins = videos["cuts_and_dissolves.mp4"]
        make_video(whole, shots, joins, width, height, fps, faststart=True)
        data = whole.read_bytes()
        broken.write_bytes(data[: len(data) * 2 // 3])
        whole.unlink()
    return truths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m curate.synthetic", description="Write the demo's synthetic sample videos.")
    parser.add_argument("folder", help="where to write the videos (created if missing)")
    args = parser.parse_args(argv)
    truths = demo_set(args.folder)
    print(f"{len(truths) + 1} sample videos in {args.folder}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
