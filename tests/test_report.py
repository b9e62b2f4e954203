"""`curate report`: a self-contained page, checked in a real headless Chromium: previews decode,
charts hold bars, the filter and sort controls work, and a screenshot shows them drawn."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import curate, read_manifests

from curate.report import DROPPED_COLOUR, KEPT_COLOUR

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium found: install Debian's chromium package (.ci/run does) to render the report"
)


@pytest.fixture(scope="module")
def out(tmp_path_factory, edited, motion, static, pan_flash) -> Path:
    videos = tmp_path_factory.mktemp("report_videos")
    for sample in (edited, motion, static, pan_flash):
        shutil.copy(sample.path, videos / sample.path.name)
    out = tmp_path_factory.mktemp("report") / "out"
    curate("split", videos, "--out", out)
    curate("motion", "--out", out)
    stdout = curate("report", "--out", out)
    assert str(out / "report" / "index.html") in stdout
    return out


def chromium(page: Path, tmp_path: Path, *args: str, fragment: str = "") -> subprocess.CompletedProcess:
    """Headless Chromium on the page, offline flags, a fresh profile each time."""
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000", *args, page.as_uri() + fragment,
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    shutil.rmtree(tmp_path / "profile", ignore_errors=True)
    return result


def cards(dom: str) -> list[tuple[str, str]]:
    """(class, data-reason) of every card in the page's order."""
    return re.findall(r'<div class="(card[^"]*)" data-reason="([^"]+)"', dom)


def test_page_is_self_contained(out):
    page = (out / "report" / "index.html").read_text()
    assert not re.search(r"""(src|href)=["'](?!data:|#)""", page)  # nothing loaded from elsewhere (links within the page aside)
    assert "http://" not in page and "https://" not in page
    clips = read_manifests(out)[1]
    assert len(cards(page)) == len(clips)
    assert page.count('class="preview"') == len(clips)
    for reason in clips.drop_reason.dropna().unique():
        assert f'data-reason="{reason}"' in page


def test_a_sample_of_clips_when_there_are_many(out, tmp_path):
    shutil.copytree(out / "manifests", tmp_path / "manifests")
    curate("report", "--out", tmp_path, "--max-clips", "3")
    assert len(cards((tmp_path / "report" / "index.html").read_text())) == 3


@needs_chromium
def test_chromium_decodes_every_preview_and_draws_every_chart(out, tmp_path):
    page = out / "report" / "index.html"
    dom = chromium(page, tmp_path, "--dump-dom").stdout
    body = re.search(r"<body([^>]*)>", dom).group(1)
    assert 'data-ready="yes"' in body
    clips = read_manifests(out)[1]
    assert f'data-previews-decoded="{len(clips)}"' in body
    charts = int(re.search(r'data-charts-drawn="(\d+)"', body).group(1))
    assert charts >= 4  # motion score, luma jump, static share, duration (no model stages ran)


@needs_chromium
def test_filter_and_sort_from_the_url(out, tmp_path):
    page = out / "report" / "index.html"
    clips = read_manifests(out)[1]
    dom = chromium(page, tmp_path, "--dump-dom", fragment="#show=kept&sort=-motion_score").stdout
    shown = [reason for cls, reason in cards(dom) if "hidden" not in cls]
    assert shown == ["kept"] * int(clips.drop_reason.isna().sum())
    scores = [float(v) for v in re.findall(r'class="card" data-reason="kept" data-order="\d+" [^>]*?data-motion-score="([^"]+)"', dom)]
    assert scores == sorted(scores, reverse=True) and len(scores) == len(shown)
    dropped = chromium(page, tmp_path, "--dump-dom", fragment="#show=static").stdout
    assert [r for cls, r in cards(dropped) if "hidden" not in cls] == ["static"] * int((clips.drop_reason == "static").sum())


@needs_chromium
def test_screenshot_shows_charts_and_previews(out, tmp_path):
    from PIL import Image

    shot = tmp_path / "report.png"
    chromium(out / "report" / "index.html", tmp_path, "--window-size=1400,2400", f"--screenshot={shot}")
    pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3)
    counts = pd.Series(map(tuple, pixels)).value_counts()

    def share(colour: str) -> int:
        rgb = tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))
        return int(counts.get(rgb, 0))

    assert share(KEPT_COLOUR) > 2000 and share(DROPPED_COLOUR) > 100  # bars in the charts and reason table
    assert len(counts) > 2000  # the previews' many colours, not a blank page
