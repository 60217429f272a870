# The two commands of a fresh machine (Python 3.11 + pip):
#   make run    set up .venv, make the synthetic data, train through Ray, run the Tester
#   make test   set up .venv, lint, run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?= data/dance
OUT ?= runs/quickstart
EPOCHS ?= 12
WORKERS ?= 2
PRESET ?= small
# The quickstart recipe for the small preset on a 2-core CPU (see README, "Model quality"):
# 2 workers x 1 clip = the lab's batch of 2; the model predicts the change from the previous
# frame, only near the pose skeleton (model.pose_region=1: the rest is frame 0, so the static
# background cannot drift); teacher forcing for 3 epochs, then the lab's decay to free-running
# (tfr -0.1 per epoch); beta = 1 (KL None: the posterior stays at the prior validation samples
# from); lr 5e-4 divided by 10 after epochs 9 and 11; 40 steps per worker per epoch (half of the
# 16 training videos' clips, drawn anew each epoch); the pose encoder sees pose t-1 beside pose t
# (model.prev_pose: where the two agree the dancer stood still); the room frame 0's dancer hides
# is filled once from the room around it (model.hidden_fill=surround) and the decoder sees frame
# 0's features at every step (model.first_frame_skip); frame 0's colours painted on the pose to
# predict, matched by each limb's pose colour (model.first_frame_posed), are what the change is
# added to, through a learned per-pixel gate with the previous frame (model.posed_base,
# model.posed_gate), so the dancer keeps frame 0's look. Validation (the 4 validation videos'
# 630-frame rollouts, the best epoch's choice) every 2 epochs and after the last.
# MODEL_SETTINGS is the architecture both stages share (make long loads make run's weights).
MODEL_SETTINGS ?= --set model.predict_change=true --set model.pose_region=1 \
	--set model.prev_pose=true --set model.hidden_fill=surround --set model.first_frame_skip=true \
	--set model.first_frame_posed=true --set model.posed_base=true --set model.posed_gate=true
TRAIN_SETTINGS ?= $(MODEL_SETTINGS) --set train.batch_size=1 --set validation.every=2 \
	--set train.kl_anneal_type=None --set train.lr=5e-4 --set train.lr_milestones=[9,11] \
	--set train.tfr_sde=3 --set train.tfr_d_step=0.1 --set train.max_steps_per_epoch=40

# Stage 2 (`make long`, after `make run`): free-running on 80-frame clips from the quickstart's
# best weights, with mirrored and recoloured clips (train.augment); the short figure stays over
# 15 frames; 8 steps per worker per epoch. The Tester gets the last epoch (validation.best_by:
# the end of the lr schedule, not the luckiest validation rollout), so validation only draws the
# curve, every 5 epochs. README, "Model quality".
LONG_OUT ?= runs/long
LONG_EPOCHS ?= 20
LONG_SETTINGS ?= --set train.init_from=$(OUT)/train --set data.clip_len=80 \
	--set validation.short_len=15 --set train.augment=true --set train.tfr=0 $(MODEL_SETTINGS) \
	--set train.batch_size=1 --set train.kl_anneal_type=None \
	--set train.lr=2e-4 --set train.lr_milestones=[9] --set train.max_steps_per_epoch=8 \
	--set validation.best_by=epoch --set validation.every=5

# More settings for an experiment, added after the recipe's in `make train`/`run` and `make long`
# (later settings win), e.g. make run OUT=runs/seed2 EXTRA="--set run.seed=2"
EXTRA ?=

.PHONY: setup run data train test-model long test test-fast lint sweep bench clean clean-run

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade --quiet pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

setup: $(BIN)/.installed

data: setup
	@if [ ! -d $(DATA) ]; then $(BIN)/cvae-data synth --out $(DATA); fi
	@if [ ! -d $(DATA).pack ]; then $(BIN)/cvae-data pack --root $(DATA) --out $(DATA).pack; fi
	@if [ ! -f $(DATA).preview.png ]; then $(BIN)/cvae-data preview $(DATA) --out $(DATA).preview.png; fi

# No target deletes a finished run: a rerun into an existing folder is refused (clean-run).
train: data
	@if [ -e $(OUT)/train ]; then echo "$(OUT)/train exists: make clean-run OUT=$(OUT) removes it, or choose another OUT=..."; exit 1; fi
	RAY_AUTH_MODE=token $(BIN)/python -m ray_jobs.train --preset $(PRESET) --data $(DATA).pack \
		--out $(OUT)/train --epochs $(EPOCHS) --num-workers $(WORKERS) $(TRAIN_SETTINGS) $(EXTRA)

test-model: setup
	$(BIN)/cvae-test --checkpoint $(OUT)/train --data $(DATA) --out $(OUT)/test

run: train test-model
	@echo "data preview: $(DATA).preview.png"
	@echo "training run: $(OUT)/train (metrics.csv, training.png, psnr_per_frame.png, tb/)"
	@echo "Tester output: $(OUT)/test (submission.csv, pred_seq*.gif, psnr_per_frame.png)"

long: data
	@if [ -e $(LONG_OUT)/train ]; then echo "$(LONG_OUT)/train exists: make clean-run OUT=$(LONG_OUT) removes it, or choose another LONG_OUT=..."; exit 1; fi
	RAY_AUTH_MODE=token $(BIN)/python -m ray_jobs.train --preset $(PRESET) --data $(DATA) \
		--out $(LONG_OUT)/train --epochs $(LONG_EPOCHS) --num-workers $(WORKERS) $(LONG_SETTINGS) $(EXTRA)
	$(BIN)/cvae-test --checkpoint $(LONG_OUT)/train --data $(DATA) --out $(LONG_OUT)/test

lint: setup
	$(BIN)/ruff check .

test: lint
	$(BIN)/python -m pytest

# Daily work: lint and every test but those that start Ray or a cluster or run a CLI end to end.
test-fast: lint
	$(BIN)/python -m pytest -m "not ray and not multinode and not slow"

sweep: data
	@if [ -e runs/sweep/sweep.json ]; then echo "runs/sweep holds a sweep: resume it (python -m ray_jobs.tune --out runs/sweep --resume), or make clean-run OUT=runs/sweep"; exit 1; fi
	RAY_AUTH_MODE=token $(BIN)/python -m ray_jobs.tune --space tune_spaces/smoke.yaml \
		--data $(DATA).pack --out runs/sweep

bench: setup
	$(BIN)/python -m benchmarks.run_all --quick

clean-run:
	rm -rf $(OUT)

clean:
	rm -rf runs $(DATA) $(DATA).pack $(DATA).preview.png
