# Every target creates .venv on first use, so a fresh clone needs only `make demo` or `make test`.
PY := .venv/bin/python
# The stamp is newer than pyproject.toml once an install has finished, so a half-done install is retried.
VENV := .venv/.installed
DEMO_DIR ?= demo
# pytest-xdist processes for `make test`: two for the 2-core CI machine (more cores: TEST_PROCESSES=auto).
# --dist loadgroup keeps each test module in one process, so a module's costly fixtures (an S3
# server with a whole run on it) are built once, not once per process; modules that share a costly
# session fixture (a whole `curate run`, training shards) form one group (tests/conftest.py).
TEST_PROCESSES ?= 2

.PHONY: install demo test format bench clean

$(VENV): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[dev]'
	touch $(VENV)

install: $(VENV)

demo: $(VENV)
	$(PY) -m curate.synthetic $(DEMO_DIR)/videos
	@# Every stage in one command, offline. Tiny random models: aesthetic scores are placeholders (so
	@# aesthetic.min=0 keeps every clip) and captions are random words, but both go through the real path.
	$(PY) -m curate run $(DEMO_DIR)/videos --out $(DEMO_DIR) --models tiny --set aesthetic.min=0 pack.short_side=256
	$(PY) -m curate report --out $(DEMO_DIR)
	@# Train the tiny video diffusion model on the shards for a minute (CPU); it resumes if run again.
	@# LoRA adapters (exported for diffusers), aspect/length buckets (48x80's pixel budget has few sizes:
	@# bucket_max_crop 0.35 lets the letterboxed clips train too), a validation loss on 10% held out.
	$(PY) -m train --shards $(DEMO_DIR)/shards --out $(DEMO_DIR)/train --preset tiny --steps 60 --quiet \
		--set num_workers=0 sample_steps=8 lora_rank=8 lr=1e-2 buckets=true height=48 width=80 bucket_max_crop=0.35 \
		val_fraction=0.1 val_every=20
	@echo
	@$(PY) -c "import pandas as pd; pd.set_option('display.width', 160); \
	v = pd.read_parquet('$(DEMO_DIR)/manifests/videos.parquet'); \
	c = pd.read_parquet('$(DEMO_DIR)/manifests/clips.parquet'); \
	v['file'] = v.path.str.rsplit('/', n=1).str[-1]; c['file'] = c.path.str.rsplit('/', n=1).str[-1]; \
	print(v[['file', 'status', 'num_frames', 'width', 'height', 'rotation', 'cut_frames', 'cut_kinds']].to_string(index=False)); print(); \
	c['crop'] = c.crop_width.astype(str) + 'x' + c.crop_height.astype(str) + '+' + c.crop_x.astype(str) + '+' + c.crop_y.astype(str); \
	print(c[['file', 'start_frame', 'end_frame', 'width', 'height', 'crop', 'sharpness', 'brightness', 'motion_score', 'text_area', 'aesthetic_score', 'duplicate_similarity', 'drop_reason', 'pack_width', 'pack_height', 'shard']].round(3).to_string(index=False)); print(); \
	print('drop reasons:', c.drop_reason.fillna('kept').value_counts().to_dict()); print(); \
	print(c[c.caption.notna()][['file', 'start_frame', 'caption_attempts', 'caption']].head(8).to_string(index=False, max_colwidth=90))"
	@echo
	@echo "Manifests: $(DEMO_DIR)/manifests/videos.parquet, $(DEMO_DIR)/manifests/clips.parquet, CLIP embeddings in $(DEMO_DIR)/manifests/embeddings/"
	@echo "Shards:    $(DEMO_DIR)/shards/*.tar (WebDataset: <key>.mp4, <key>.txt, <key>.json), index $(DEMO_DIR)/shards/index.json"
	@echo "Report:    $(DEMO_DIR)/report/index.html (open it in a browser)"
	@$(PY) -c "import json; m = [json.loads(l) for l in open('$(DEMO_DIR)/train/metrics.jsonl')][-1]; \
	print('training, step', m['step'], ': loss', round(m['loss'], 3), ' val_loss', round(m.get('val_loss', float('nan')), 3), \
	' bucket_counts', m['bucket_counts'], ' skipped', m['skipped'])"
	@echo "Training:  $(DEMO_DIR)/train (metrics.jsonl, checkpoints/step-60/, samples/step-60-*.mp4 from the tiny model,"
	@echo "           LoRA adapters for diffusers in lora/pytorch_lora_weights.safetensors)"
	@echo "Read them with: import pandas as pd; pd.read_parquet('$(DEMO_DIR)/manifests/clips.parquet')"
	@echo "Burned-in text: subtitled.mp4 is dropped as text_overlay for its subtitles (text_area), not for the sign it pans past (scene text)"
	@echo "Duplicates: damaged.mp4 is the first part of cuts_and_dissolves.mp4: its clip is dropped as duplicate (duplicate_of names the kept one), packed once"
	@echo "Re-tune without recomputing: $(PY) -m curate filter --out $(DEMO_DIR) --set motion.min=0.01 text.max_area=0.1 dedup.threshold=0.9"

test: $(VENV)
	@# Lint and format check first (pyproject's [tool.ruff]): a finding fails the run before the
	@# slow tests start. `make format` rewrites the files the second check names.
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	@# The project's own bytecode, cached once: where PYTHONDONTWRITEBYTECODE is set (as on our machines), each
	@# command a test runs (its process, its fork server) would compile every module anew.
	$(PY) -m compileall -q curate train
	@# One OpenMP thread in each test process and each command it runs (a user's own setting wins):
	@# two processes already keep both cores busy, and torch's two threads apiece only crowd them.
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m pytest -q -n $(TEST_PROCESSES) --dist loadgroup

format: $(VENV)
	$(PY) -m ruff format .

bench: $(VENV)
	$(PY) bench/split.py

clean:
	rm -rf $(DEMO_DIR) bench/out .pytest_cache
