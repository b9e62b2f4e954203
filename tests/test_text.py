"""The text stage: PP-OCRv4's real detector finds text burned in with Pillow over panning textured
scenes; subtitles, a title, a ticker and a corner logo are dropped as overlay, a sign that pans
with the camera is kept as scene text, clean footage is kept; text.crop keeps band-only overlays;
the model loads with the network refused."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import H, W, curate, read_manifests, run_module

from curate.errors import ModelUnavailable
from curate.models.text_detector import boxes, input_size, load_text_detector, model_path
from curate.stages.text.overlay import union_area
from curate.synthetic import Shot, add_overlay, make_video, render

# name -> (shot, overlay kind): four seconds each, the camera panning (so overlay text stands still
# against a moving picture) except the still ones, where only the place of the text can tell.
VIDEOS = {
    "subtitles": (Shot(96, 23, pan=(1.5, 0)), "subtitles"),
    "title": (Shot(96, 24, pan=(-1.5, 0.5)), "title"),
    "ticker": (Shot(96, 25, pan=(1.0, 0)), "ticker"),
    "logo": (Shot(96, 26, pan=(1.5, 0)), "logo"),
    "still_subtitles": (Shot(96, 28, moving_object=True), "subtitles"),
    "sign": (Shot(96, 22, pan=(-2.0, 0), sign="OPEN 24 HOURS"), None),
    "clean": (Shot(96, 21, pan=(1.5, 0.3)), None),
}
DROPPED = {"subtitles", "title", "ticker", "logo", "still_subtitles"}


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    """split, motion and text through the command line over the videos: (output folder, clips by file)."""
    folder = tmp_path_factory.mktemp("text")
    for name, (shot, overlay) in VIDEOS.items():
        make_video(folder / "videos" / f"{name}.mp4", [shot], [], W, H, 24, overlay=overlay)
    out = folder / "out"
    curate("split", folder / "videos", "--out", out)
    curate("motion", "--out", out)
    curate("text", "--out", out)
    return out, _by_file(out)


def _by_file(out):
    _, clips = read_manifests(out)
    clips["file"] = clips.path.str.rsplit("/", n=1).str[-1].str.removesuffix(".mp4")
    return {file: group for file, group in clips.groupby("file")}


def test_overlay_text_is_found_and_dropped(text_run):
    _, clips = text_run
    for name in DROPPED:
        group = clips[name]
        assert (group.drop_reason == "text_overlay").all(), (name, group[["text_area", "drop_reason"]])
        assert (group.text_area > 0.01).all() and (group.text_boxes >= 1).all(), name
        assert all(len(regions) >= 1 for regions in group.text_regions), name


def test_where_the_overlay_sits(text_run):
    _, clips = text_run
    subtitles, ticker, logo, title = (clips[n].iloc[0] for n in ("subtitles", "ticker", "logo", "title"))
    assert 0.1 < subtitles.text_band_bottom < 0.25 and subtitles.text_band_top == 0 and subtitles.text_mid_area == 0
    assert 0.05 < ticker.text_band_bottom < 0.2 and ticker.text_mid_area == 0
    assert 0 < logo.text_band_top < 0.25 and logo.text_band_bottom == 0
    x0, y0, x1, y1 = logo.text_regions[0]
    assert x0 > 0.6 and y1 < 0.25  # the top-right corner
    assert title.text_mid_area > 0.03 and title.text_band_top == title.text_band_bottom == 0  # no crop removes a title


def test_scene_text_and_clean_footage_are_kept(text_run):
    _, clips = text_run
    sign, clean = clips["sign"], clips["clean"]
    assert sign.drop_reason.isna().all() and clean.drop_reason.isna().all()
    assert (sign.text_area == 0).all() and (sign.text_scene_area > 0.02).all()  # found, and known to move with the scene
    assert (clean.text_area == 0).all() and (clean.text_boxes == 0).all()


def test_crop_keeps_clips_whose_overlay_sits_in_the_bands(text_run, tmp_path):
    out, _ = text_run
    printed = curate("filter", "--out", out, "--set", "text.crop=true")
    assert "text_overlay" in printed
    clips = _by_file(out)
    for name in ("subtitles", "ticker", "logo", "still_subtitles"):
        assert clips[name].drop_reason.isna().all(), name
    assert (clips["title"].drop_reason == "text_overlay").all()
    curate("filter", "--out", out, "--set", "text.min_keep_share=0.95")  # the bands would leave too little
    assert (_by_file(out)["subtitles"].drop_reason == "text_overlay").all()
    curate("filter", "--out", out, "--set", "text.crop=false", "text.min_keep_share=0.6", "text.max_area=0.5")
    assert not _by_file(out)["subtitles"].drop_reason.notna().any()  # a higher threshold keeps them all
    curate("filter", "--out", out, "--set", "text.max_area=0.004")


def test_status_and_report_show_the_text_stage(text_run):
    out, _ = text_run
    printed = curate("status", "--out", out)
    assert "text: " in printed and "dropped (text_overlay): 5" in printed
    curate("report", "--out", out)
    page = (out / "report" / "index.html").read_text()
    assert 'data-column="text_area"' in page and 'data-reason="text_overlay"' in page


def test_the_detector_loads_and_runs_with_the_network_refused(offline):
    """The weights come from the installed package: nothing is fetched, and a socket connect
    would raise (the `offline` fixture)."""
    assert model_path().name == "ch_PP-OCRv4_det_infer.onnx"
    detector = load_text_detector()
    frames = list(add_overlay(render([Shot(3, 5, pan=(1.0, 0))], [], W, H), "subtitles", 24))
    size = input_size(W, H, 640)
    from PIL import Image

    batch = np.stack([np.asarray(Image.fromarray(f).resize(size)) for f in frames])
    maps = detector(batch)  # one forward for the batch: the input's batch axis is dynamic
    assert maps.shape == (3, size[1], size[0])
    found = boxes(maps[0])
    assert len(found) >= 1
    x0, y0, x1, y1, score = found[np.argmax(found[:, 2] - found[:, 0])]
    assert y0 > 0.75 and x0 < 0.5 < x1 and score >= 0.5  # the subtitle line, bottom centre


def test_a_missing_model_is_one_error_line(tmp_path, text_run):
    out, _ = text_run
    with pytest.raises(ModelUnavailable, match="text.weights"):
        model_path(str(tmp_path / "nothing.onnx"))
    result = run_module("text", "--out", out, "--set", f"text.weights={tmp_path / 'nothing.onnx'}", "text.frames=3")
    assert result.returncode == 2 and result.stderr.strip().startswith("error: text detector: no ONNX file")
    assert "Traceback" not in result.stderr


def test_union_area_counts_overlaps_once():
    assert union_area(np.zeros((0, 4))) == 0
    assert union_area(np.array([[0, 0, 0.5, 0.5], [0.25, 0.25, 0.75, 0.75]])) == pytest.approx(0.25 + 0.25 - 0.0625)
    assert union_area(np.array([[0.1, 0.1, 0.2, 0.2], [0.1, 0.1, 0.2, 0.2]])) == pytest.approx(0.01)


def test_a_clip_that_cannot_be_read_is_a_row_with_its_error(tmp_path):
    from curate.config import TextConfig
    from curate.manifest import ClipRef
    from curate.stages.text.stage import TextStage

    broken = tmp_path / "gone.mp4"
    broken.write_bytes(b"not a video at all")
    clip = ClipRef("c", "v", str(broken), 0, 48, 0.0, 2.0, 48, 24.0, W, H)
    (row,) = TextStage(TextConfig()).score([clip])
    assert row.keys() == {"text_error"} and row["text_error"]


def test_frames_by_count_or_by_rate():
    from curate.config import TextConfig
    from curate.manifest import ClipRef
    from curate.stages.text.stage import TextStage

    clip = ClipRef("c", "v", "v.mp4", 0, 96, 0.0, 4.0, 96, 24.0, W, H)
    assert len(TextStage(TextConfig(frames=6)).positions(clip)) == 6
    assert len(TextStage(TextConfig(frames_per_s=2)).positions(clip)) == 8
    assert len(TextStage(TextConfig(frames_per_s=10, max_frames=12)).positions(clip)) == 12
    assert len(TextStage(TextConfig(frames_per_s=0.1)).positions(clip)) == 2  # never fewer than two: motion needs a pair


def test_a_title_card_on_a_plain_background_is_overlay(tmp_path):
    """No camera motion to go by and the title in the middle: the blank picture around it says
    it was put there (the motion stage would drop such a still card too; this is the text's own call)."""
    from conftest import clip_refs

    from curate.config import TextConfig
    from curate.stages.text.stage import TextStage
    from curate.synthetic import write_video

    plain = (np.full((H, W, 3), 25, np.uint8) for _ in range(72))
    path = tmp_path / "card.mp4"
    write_video(path, add_overlay(plain, "title", 24), fps=24)
    (row,) = TextStage(TextConfig()).score(clip_refs(path))
    assert row["text_area"] > 0.03 and row["text_mid_area"] > 0.03 and row["text_scene_area"] == 0


def _packed_then_measured(out, folder):
    """Pack `out`'s kept clips, write each packed mp4 out as a video of its own, and run split,
    motion and text on those: (packed width x height, clips.parquet of the packed videos)."""
    import tarfile

    import av

    curate("pack", "--out", out, "--set", "pack.short_side=0")
    packed = folder / "packed"
    packed.mkdir()
    for shard in sorted((out / "shards").glob("*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".mp4"):
                    (packed / member.name).write_bytes(tar.extractfile(member).read())
    with av.open(str(next(packed.glob("*.mp4")))) as container:
        size = (container.streams.video[0].width, container.streams.video[0].height)
    curate("split", packed, "--out", folder / "again")
    curate("motion", "--out", folder / "again")
    curate("text", "--out", folder / "again")
    return size, read_manifests(folder / "again")[1]


def test_crop_packs_the_picture_without_its_subtitle_band(tmp_path):
    """With text.crop the packed mp4 is the picture above the subtitles: the text stage finds no
    overlay text in it. Without (kept by a high max_area), the same check finds the subtitles."""
    shot, overlay = VIDEOS["subtitles"]
    make_video(tmp_path / "videos" / "subtitles.mp4", [shot], [], W, H, 24, overlay=overlay)
    results = {}
    for crop in (True, False):
        out, folder = tmp_path / f"out-{crop}", tmp_path / f"check-{crop}"
        folder.mkdir()
        curate("split", tmp_path / "videos", "--out", out)
        curate("filter", "--out", out, "--set", f"text.crop={str(crop).lower()}", "text.max_area=" + ("0.004" if crop else "0.5"))
        curate("motion", "--out", out)
        curate("text", "--out", out)
        _, clips = read_manifests(out)
        assert clips.drop_reason.isna().all() and (clips.text_area > 0.01).all()  # kept, though it has subtitles
        results[crop] = _packed_then_measured(out, folder)
    (width, height), cropped = results[True]
    assert (width, height) != (W, H) and width == W and height < 0.85 * H  # the subtitle band is gone, the width kept
    assert (cropped.text_area == 0).all()
    (width, height), whole = results[False]
    assert (width, height) == (W, H) and (whole.text_area > 0.01).all()
