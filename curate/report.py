"""`curate report`: one self-contained HTML page to look at a curation run.

The page (DIR/report/index.html) opens offline, with nothing beside it: totals and the drop
reasons, a histogram of every score (kept and dropped clips stacked, so a threshold's effect is
visible), and a grid of clips, each with an animated WebP preview, its caption, scores and drop
reason, which the reader can filter (kept, dropped, one reason) and sort by any score. Charts are
inline SVG drawn here; previews are a few frames per clip (the picture in its crop box, as the
stages see it; a card notes the crop), decoded by the shared frame pool and
encoded by Pillow, embedded as data URIs. Filtering and sorting are a few lines of JavaScript;
the state also reads from the URL fragment (`#show=static&sort=-aesthetic_score`).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from curate.framepool import decode_frames, frame_indices, uniform_positions
from curate.manifest import OutputLayout, clip_refs
from curate.picture import Upright
from curate.pipeline import CLIP_STAGES, REASONS, STAGES
from curate.shards import INDEX_NAME
from curate.storage import makedirs, read_parquet, write_text_atomic

# Score columns shown as histograms and sort keys, with how to read them: every stage's, then
# two the report derives itself.
SCORES = {
    **{column: label for spec in STAGES for column, label in spec.scores.items()},
    "duration_s": "duration (s)",
    "caption_words": "caption length (words)",
}
KEPT_COLOUR, DROPPED_COLOUR = "#2f7ed8", "#e4572e"
TEXT_BOX_COLOUR = (255, 40, 200)  # overlay text boxes drawn on previews: a colour footage rarely has
_BINS = 24
_ERROR_COLUMNS = [spec.error_column for spec in reversed(CLIP_STAGES)]  # the latest stage's first


def build_report(layout: OutputLayout, folder, max_clips: int = 300, preview_frames: int = 8,
                 preview_width: int = 192, threads: int = 2) -> Path:  # fmt: skip
    """Write `folder`/index.html (a local folder or an object-store prefix) for the manifests
    under `layout`; return its path."""
    clips = _clips(layout)
    shown = _pick(clips, max_clips)
    previews = _previews(shown, preview_frames, preview_width, threads)
    page = _PAGE.format(
        title=html.escape(f"vidcurate report: {layout.out}"),
        style=_STYLE,
        summary=_summary(layout, clips),
        charts="\n".join(_histogram(clips, column, label) for column, label in SCORES.items() if clips[column].notna().any()),
        controls=_controls(clips),
        cards="\n".join(_card(row, previews.get(row.clip_id)) for row in shown.itertuples()),
        shown=len(shown),
        total=len(clips),
        script=_SCRIPT,
    )
    makedirs(folder)
    path = folder / "index.html"
    write_text_atomic(page, path)
    return path


def _clips(layout: OutputLayout) -> pd.DataFrame:
    clips = read_parquet(layout.clips).to_pandas()
    clips["duration_s"] = clips.num_frames / clips.fps
    caption = clips["caption"] if "caption" in clips else pd.Series(None, index=clips.index, dtype=object)
    clips["caption_words"] = caption.map(lambda c: len(c.split()) if isinstance(c, str) else np.nan)
    for column in SCORES:
        if column not in clips:
            clips[column] = np.nan
    clips["reason"] = clips.drop_reason.fillna("kept")
    return clips


def _pick(clips: pd.DataFrame, max_clips: int) -> pd.DataFrame:
    """All clips, or `max_clips` spread evenly over them (by video and time): a deterministic
    sample that keeps every video and reason in proportion."""
    ordered = clips.sort_values(["video_id", "start_frame"], kind="stable")
    if len(ordered) <= max_clips:
        return ordered
    picks = np.unique(np.linspace(0, len(ordered) - 1, max_clips).round().astype(int))
    return ordered.iloc[picks]


# -- previews -------------------------------------------------------------------------------------


def _previews(clips: pd.DataFrame, num_frames: int, width: int, threads: int) -> dict[str, str]:
    """clip_id → data URI of an animated WebP of `num_frames` frames spread over the clip."""
    from PIL import Image

    refs = clip_refs(clips)
    regions = dict(zip(clips.clip_id, clips["text_regions"], strict=True)) if "text_regions" in clips else {}
    wanted = [frame_indices(ref, uniform_positions(num_frames)) for ref in refs]
    frames: dict[int, dict[int, np.ndarray]] = {}

    def to_rgb(frame, upright: Upright) -> np.ndarray:
        shown_width, shown_height = upright.display_size(frame)
        return upright.rgb(frame, width, max(2, round(shown_height * width / shown_width / 2) * 2), "BILINEAR")

    for event in decode_frames(refs, wanted, to_rgb, threads, 4 * num_frames):
        if event[0] == "frame":
            frames.setdefault(event[1], {})[event[2]] = event[3]
    previews = {}
    for clip_no, ref in enumerate(refs):
        got = frames.get(clip_no, {})
        boxes = regions.get(ref.clip_id)
        images = [Image.fromarray(_outline(got[i], boxes)) for i in wanted[clip_no] if i in got]
        if not images:
            continue
        buffer = io.BytesIO()
        step_ms = max(60, round(1000 * ref.num_frames / ref.fps / len(images)))
        images[0].save(buffer, format="WEBP", save_all=True, append_images=images[1:], duration=step_ms, loop=0, quality=70)
        previews[ref.clip_id] = "data:image/webp;base64," + base64.b64encode(buffer.getvalue()).decode()
    return previews


def _outline(rgb: np.ndarray, boxes) -> np.ndarray:
    """The frame with the text stage's overlay boxes (x0, y0, x1, y1 as shares of the picture)
    outlined, so a clip dropped for burned-in text shows where the text was."""
    if boxes is None or not len(boxes):
        return rgb
    out = rgb.copy()
    height, width = out.shape[:2]
    for x0, y0, x1, y1 in boxes:
        left, top = min(width - 1, int(x0 * width)), min(height - 1, int(y0 * height))
        right, bottom = min(width - 1, int(x1 * width)), min(height - 1, int(y1 * height))
        out[top : bottom + 1, [left, right]] = TEXT_BOX_COLOUR
        out[[top, bottom], left : right + 1] = TEXT_BOX_COLOUR
    return out


# -- page parts -----------------------------------------------------------------------------------


def _summary(layout: OutputLayout, clips: pd.DataFrame) -> str:
    videos = read_parquet(layout.videos, columns=["status"]).to_pandas() if layout.videos.exists() else pd.DataFrame({"status": []})
    kept = clips[clips.drop_reason.isna()]
    rows = [
        ("videos", f"{len(videos)} ({int((videos.status == 'ok').sum())} ok, {int((videos.status != 'ok').sum())} errors)"),
        ("clips", f"{len(clips)} ({len(kept)} kept, {kept.duration_s.sum() / 3600:.2f} h kept)"),
    ]
    index = layout.shards / INDEX_NAME
    if index.exists():
        shards = json.loads(index.read_text())["shardlist"]
        size = sum(s.get("filesize", 0) for s in shards) / 1e9
        rows.append(("shards", f"{len(shards)} ({sum(s['nsamples'] for s in shards)} samples, {size:.2f} GB)"))
    totals = "".join(f"<tr><th>{name}</th><td>{html.escape(value)}</td></tr>" for name, value in rows)
    counts = clips.reason.value_counts()
    biggest = max(int(counts.max()), 1)
    bars = "".join(
        f'<tr><th>{html.escape(reason)}</th><td class="num">{count}</td>'
        f'<td><svg class="bar" width="240" height="14"><rect width="{max(1, 240 * count / biggest):.1f}" height="14" '
        f'fill="{KEPT_COLOUR if reason == "kept" else DROPPED_COLOUR}"/></svg></td>'
        f'<td class="rule">{html.escape(REASONS.get(reason, ""))}</td></tr>'
        for reason, count in counts.items()
    )
    return f'<table class="totals">{totals}</table><h2>Drop reasons</h2><table class="reasons">{bars}</table>'


def _histogram(clips: pd.DataFrame, column: str, label: str) -> str:
    """An SVG histogram of `column`: kept clips stacked under dropped ones."""
    values = clips[column].astype(float)
    present = values.notna()
    low, high = float(values[present].min()), float(values[present].max())
    if math.isclose(low, high):
        high = low + 1.0
    edges = np.linspace(low, high, _BINS + 1)
    kept = np.histogram(values[present & clips.drop_reason.isna()], edges)[0]
    dropped = np.histogram(values[present & clips.drop_reason.notna()], edges)[0]
    tallest = max(int((kept + dropped).max()), 1)
    width, height, bar = 300, 120, 300 / _BINS
    rects = []
    for i, (k, d) in enumerate(zip(kept, dropped, strict=True)):
        kh, dh = height * k / tallest, height * d / tallest
        if k:
            rects.append(f'<rect x="{i * bar:.1f}" y="{height - kh:.1f}" width="{bar - 1:.1f}" height="{kh:.1f}" fill="{KEPT_COLOUR}"/>')
        if d:
            rects.append(
                f'<rect x="{i * bar:.1f}" y="{height - kh - dh:.1f}" width="{bar - 1:.1f}" height="{dh:.1f}" fill="{DROPPED_COLOUR}"/>'
            )
    return (
        f'<figure class="chart" data-column="{column}"><figcaption>{html.escape(label)}</figcaption>'
        f'<svg width="{width}" height="{height + 16}" role="img" aria-label="{html.escape(label)}">{"".join(rects)}'
        f'<text x="0" y="{height + 13}">{low:.3g}</text><text x="{width}" y="{height + 13}" text-anchor="end">{high:.3g}</text>'
        f"</svg></figure>"
    )


def _controls(clips: pd.DataFrame) -> str:
    reasons = [r for r in clips.reason.value_counts().index if r != "kept"]
    shows = [("all", "all clips"), ("kept", "kept"), ("dropped", "dropped"), *[(r, f"dropped: {r}") for r in reasons]]
    sorts = [("", "video and time")] + [
        (f"{sign}{column}", f"{label} {'high first' if sign else 'low first'}")
        for column, label in SCORES.items()
        if clips[column].notna().any()
        for sign in ("-", "")
    ]
    show = "".join(f'<option value="{v}">{html.escape(t)}</option>' for v, t in shows)
    sort = "".join(f'<option value="{v}">{html.escape(t)}</option>' for v, t in sorts)
    return f'<label>show <select id="show">{show}</select></label> <label>sort by <select id="sort">{sort}</select></label>'


def _card(row, preview: str | None) -> str:
    scores = {column: getattr(row, column) for column in SCORES}
    data = " ".join(f'data-{c.replace("_", "-")}="{v:.6g}"' for c, v in scores.items() if not pd.isna(v))
    caption = row.caption if isinstance(getattr(row, "caption", None), str) else ""
    error = next((getattr(row, c) for c in _ERROR_COLUMNS if isinstance(getattr(row, c, None), str)), "")
    media = (
        f'<img class="preview" src="{preview}" alt="preview of {html.escape(row.clip_id)}">'
        if preview
        else '<div class="preview none">no preview</div>'
    )
    facts = " · ".join(f"{c.split('_')[0] if c != 'duration_s' else 'dur'} {v:.3g}" for c, v in scores.items()
                       if not pd.isna(v) and c in ("motion_score", "text_area", "aesthetic_score", "duration_s"))  # fmt: skip
    crop = getattr(row, "crop_width", None)
    if crop == crop and crop is not None and (row.crop_width, row.crop_height) != (row.width, row.height):  # black borders cut off
        facts += f" · crop {int(row.crop_width)}x{int(row.crop_height)} of {row.width}x{row.height}"
    badge = "kept" if row.reason == "kept" else row.reason
    return (
        f'<div class="card" data-reason="{html.escape(row.reason)}" data-order="{row.Index}" id="clip-{html.escape(row.clip_id)}" {data}>'
        f"{media}"
        f'<div class="badge {"ok" if badge == "kept" else "drop"}">{html.escape(badge)}</div>'
        f'<div class="file">{html.escape(Path(row.path).name)} · frames {row.start_frame}-{row.end_frame}</div>'
        f'<div class="id">{html.escape(row.clip_id)}</div><div class="facts">{html.escape(facts)}</div>{_duplicate_of(row)}'
        f'<div class="caption">{html.escape(caption or error)}</div></div>'
    )


def _duplicate_of(row) -> str:
    """For a dropped duplicate: a link to the card of the kept clip it duplicates (or the folder
    holding it, for a clip of an --against folder), with the similarity to its best match."""
    if row.reason != "duplicate" or not isinstance(getattr(row, "duplicate_of", None), str):
        return ""
    target = html.escape(row.duplicate_of)
    folder = getattr(row, "duplicate_in", None)
    where = f"{target} in {html.escape(folder)}" if isinstance(folder, str) else f'<a href="#clip-{target}">{target}</a>'
    scores = [("frame hashes", getattr(row, "duplicate_similarity", None)), ("CLIP cosine", getattr(row, "semantic_similarity", None))]
    similar = ", ".join(f"{name} {value:.3g}" for name, value in scores if value is not None and value == value)
    return f'<div class="facts">duplicate of {where} (best matches: {similar})</div>'


_STYLE = """
body { font: 14px system-ui, sans-serif; margin: 24px; color: #222; background: #fff; }
h1 { font-size: 20px; } h2 { font-size: 16px; margin-top: 24px; }
table.totals th, table.reasons th { text-align: left; padding-right: 12px; font-weight: 600; }
td.num { text-align: right; padding-right: 8px; } td.rule { color: #666; font-size: 12px; padding-left: 8px; }
.charts { display: flex; flex-wrap: wrap; gap: 16px; }
figure.chart { margin: 0; } figcaption { font-size: 12px; color: #444; } svg text { font-size: 10px; fill: #666; }
.legend span { display: inline-block; width: 10px; height: 10px; margin: 0 4px 0 12px; }
.controls { margin: 12px 0; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(210px, 1fr)); gap: 12px; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 8px; font-size: 12px; }
.card.hidden { display: none; }
.preview { width: 192px; max-width: 100%; display: block; background: #eee; }
.preview.none { height: 108px; line-height: 108px; text-align: center; color: #999; }
.badge { display: inline-block; border-radius: 3px; padding: 0 6px; margin: 4px 0; color: #fff; }
.badge.ok { background: #2f7ed8; } .badge.drop { background: #e4572e; }
.file { font-weight: 600; overflow-wrap: anywhere; }
.id { font-family: monospace; font-size: 11px; color: #555; } .facts { color: #333; } .caption { margin-top: 4px; }
"""

_SCRIPT = """
(function () {
  const grid = document.getElementById('grid');
  const cards = Array.from(grid.children);
  const show = document.getElementById('show'), sort = document.getElementById('sort');
  function apply() {
    const want = show.value, key = sort.value.replace(/^-/, '').replace(/_/g, '-'), desc = sort.value.startsWith('-');
    cards.forEach(c => {
      const r = c.dataset.reason;
      c.classList.toggle('hidden', !(want === 'all' || (want === 'kept' ? r === 'kept' : want === 'dropped' ? r !== 'kept' : r === want)));
    });
    const value = c => key ? parseFloat(c.dataset[key.replace(/-([a-z])/g, (_, x) => x.toUpperCase())]) : parseFloat(c.dataset.order);
    const sorted = cards.slice().sort((a, b) => {
      const x = value(a), y = value(b);
      if (isNaN(x) !== isNaN(y)) return isNaN(x) ? 1 : -1;  // clips without the score go last
      return desc ? y - x : x - y;
    });
    sorted.forEach(c => grid.appendChild(c));
    document.getElementById('count').textContent = cards.filter(c => !c.classList.contains('hidden')).length;
    history.replaceState(null, '', '#show=' + want + '&sort=' + sort.value);
  }
  const state = new URLSearchParams(location.hash.slice(1));
  if (state.get('show')) show.value = state.get('show');
  if (state.get('sort') !== null && state.get('sort') !== undefined) sort.value = state.get('sort') || '';
  show.addEventListener('change', apply); sort.addEventListener('change', apply);
  apply();
  // For readers and tests: how many previews decoded and how many charts hold bars. The window's
  // load event comes after every image has loaded (or failed), so the count is final then.
  function mark() {
    document.body.dataset.previewsDecoded = Array.from(document.images).filter(i => i.complete && i.naturalWidth > 0).length;
    document.body.dataset.chartsDrawn = Array.from(document.querySelectorAll('figure.chart'))
      .filter(f => f.querySelector('svg rect')).length;
    document.body.dataset.ready = 'yes';
  }
  if (document.readyState === 'complete') mark(); else window.addEventListener('load', mark);
})();
"""

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title><style>{style}</style></head>
<body>
<h1>{title}</h1>
{summary}
<h2>Scores</h2>
<div class="legend"><span style="background:#2f7ed8"></span>kept<span style="background:#e4572e"></span>dropped</div>
<div class="charts">{charts}</div>
<h2>Clips</h2>
<div class="controls">{controls} <span id="count">{shown}</span> shown of {total} clips</div>
<div class="grid" id="grid">
{cards}
</div>
<script>{script}</script>
</body></html>
"""
