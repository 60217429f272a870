#!/usr/bin/env bash
# The GPU path through Ray, in one call of at most ~8 minutes, on a machine with one CUDA GPU:
#   1. cold start: benchmarks.train_step at the lab preset (progress within seconds, 3 rounds)
#   2. ray_jobs.train --use-gpu, lab preset: teacher-forced in bf16 (the default on a GPU) and
#      in fp32 (loss and val_psnr side by side), then free-running: training frames/s from
#      metrics.csv, the first epoch against the others (the cold start a worker pays), and the
#      630-frame validation rollout's seconds; free-running once more with the per-frame step
#      compiled (run.compile; not with QUICK: compiling takes minutes on a 2-core CPU)
#   3. a sweep of 1 trial, then of 8 trials sharing the GPU (--gpus-per-worker 0.125; 2 trials with
#      QUICK): wall time
#   nvidia-smi is sampled every second during 2 and 3 (utilization, memory) into OUT/*.csv.
# Every step has its own timeout: a stall still leaves the other figures. Figures go to
# OUT/figures.txt (and OUT/*.json, *.csv): at most 8 files.
#
# Usage: benchmarks/gpu_check.sh OUT_DIR       (PYTHON=python3 BATCH=32 EPOCHS=4)
#   QUICK=1 benchmarks/gpu_check.sh OUT_DIR    the same steps at the smallest sizes, on a CPU
# On the lent GPU machine (no Ray, no network): ../shared/tools/ray-device-bundle builds the
# carry folder .raybundle/ once; this script sources its setup.sh when it is there.
set -u
OUT=${1:?usage: benchmarks/gpu_check.sh OUT_DIR}
PY=${PYTHON:-python3}
QUICK=${QUICK:-}
BATCH=${BATCH:-32}
EPOCHS=${EPOCHS:-4}
WORK=${WORK:-/tmp/gpu_check}
SLOW=1  # every step's time limit is multiplied by this
SHARED=8  # trials in the sweep that shares the GPU
export PYTHONUNBUFFERED=1 RAY_AUTH_MODE=token
mkdir -p "$OUT" "$WORK"
OUT=$(cd "$OUT" && pwd)
FIG="$OUT/figures.txt"
: > "$FIG"
[ -f .raybundle/setup.sh ] && source .raybundle/setup.sh
log() { echo "== $(date +%T) $*"; }
fig() { echo "$*" | tee -a "$FIG"; }

# A sampler of nvidia-smi, one line a second, while a step runs (none on a CPU).
sample_start() {  # file
    SAMPLER=
    command -v nvidia-smi >/dev/null || return 0
    nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader,nounits \
        -l 1 > "$1" 2>/dev/null &
    SAMPLER=$!
}
sample_stop() {  # file, label
    [ -n "${SAMPLER:-}" ] && kill "$SAMPLER" 2>/dev/null && wait "$SAMPLER" 2>/dev/null
    [ -s "$1" ] || return 0
    fig "$2: $($PY - "$1" <<'PY'
import sys
rows = [line.split(",") for line in open(sys.argv[1]) if line.count(",") == 2]
util = [float(r[1]) for r in rows]
busy = [u for u in util if u > 0]
mem = [float(r[2]) for r in rows]
print(f"{len(util)} samples, GPU utilization mean {sum(util) / len(util):.0f}%, "
      f"mean while busy {sum(busy) / max(len(busy), 1):.0f}%, memory max {max(mem):.0f} MiB")
PY
)"
}

log "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tail -n +1
$PY -c "import torch, ray; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
torch.cuda.get_device_name() if torch.cuda.is_available() else '', 'ray', ray.__version__)"
echo "cores: $(nproc)"

DATA=$WORK/dance
if [ -n "$QUICK" ]; then
    SYNTH=(--train-videos 2 --frames-per-video 24 --val-frames 12 --test-sequences 1 --test-frames 6)
    MODEL=(--preset small --set model.frame_channels=8 --set model.label_channels=4
           --set model.latent_channels=4 --set model.decoder_channels=8
           --set data.clip_len=4 --set validation.val_len=12)
    GPU=() ; SHARE=() ; BATCH=2 ; EPOCHS=2
    BENCH=(--tiny)
    SLOW=4  # a 2-core CPU starts each Ray and its workers several times slower than a GPU node
    SHARED=2  # trials in the shared sweep: 2 CPUs here
else
    SYNTH=(--train-videos 16 --frames-per-video 320)  # 320 clips of 16 frames
    MODEL=(--preset lab)  # train.precision auto: bf16 on the GPU
    GPU=(--use-gpu) ; SHARE=(--gpus-per-worker 0.125)
    BENCH=(--preset lab --device cuda --bf16 --rounds 3)
fi
log "synthetic data and its pack"
if [ ! -d "$DATA.pack" ]; then
    timeout 45 $PY -m cvae.data_cli synth --out "$DATA" "${SYNTH[@]}" --quiet &&
    timeout 30 $PY -m cvae.data_cli pack --root "$DATA" --out "$DATA.pack" \
        $([ -n "$QUICK" ] && echo --clip-len 4) --quiet || exit 1
fi

log "1. cold start: train_step (progress as it goes)"
start=$(date +%s)
timeout $((50 * SLOW)) $PY -m benchmarks.train_step "${BENCH[@]}" --json-out "$OUT/train_step.json" 2>&1 \
    | tail -25
fig "train_step: rc ${PIPESTATUS[0]}, $(( $(date +%s) - start )) s in all"

# One Ray Train run; prints training frames/s per epoch from its metrics.csv.
ray_train() {  # name, limit, extra args...
    local name=$1 limit=$2; shift 2
    rm -rf "$WORK/$name"
    sample_start "$OUT/smi_$name.csv"
    local start; start=$(date +%s)
    timeout $((limit * SLOW)) $PY -m ray_jobs.train "${GPU[@]}" --num-workers 1 --data "$DATA.pack" \
        --out "$WORK/$name" --epochs "$EPOCHS" "${MODEL[@]}" --set train.batch_size="$BATCH" \
        --set run.progress=false --set validation.every="$EPOCHS" --set train.per_save=0 "$@" \
        > "$WORK/$name.log" 2>&1
    local rc=$?
    sample_stop "$OUT/smi_$name.csv" "$name nvidia-smi"
    tail -4 "$WORK/$name.log"
    fig "$name: rc $rc, wall $(( $(date +%s) - start )) s; $($PY - "$WORK/$name/metrics.csv" "$BATCH" <<'PY'
import csv, sys, yaml
from pathlib import Path
try:
    rows = list(csv.DictReader(open(sys.argv[1])))
    cfg = yaml.safe_load((Path(sys.argv[1]).parent / "config.yaml").read_text())
except OSError as err:
    sys.exit(f"no metrics ({err})")
if not rows:
    sys.exit("no epoch finished")
per_clip = cfg["data"]["clip_len"] - 1  # predicted frames per clip
clips = int(cfg["train"]["max_steps_per_epoch"] or 0) * int(sys.argv[2])
rates = [clips * per_clip / float(r["seconds"]) for r in rows]
later = rates[1:] or rates
val = [r.get("val_seconds") for r in rows if r.get("val_seconds")]
last = rows[-1]
print(f"training frames/s: epoch 1 {rates[0]:.0f}, later epochs {sum(later) / len(later):.0f}"
      f" (epoch seconds {', '.join(r['seconds'] for r in rows)}); last loss {last['loss']}"
      + (f", val_psnr {last['val_psnr']}" if last.get("val_psnr") else "")
      + (f"; validation rollout {float(val[-1]):.1f} s" if val else ""))
PY
)"
}

log "2. ray_jobs.train, teacher-forced then free-running (batch $BATCH)"
STEPS=$([ -n "$QUICK" ] && echo 2 || echo 20)
ray_train tf 70 --set train.tfr_sde=1000 --set train.max_steps_per_epoch="$STEPS"
ray_train tf_fp32 50 --set train.tfr_sde=1000 --set train.max_steps_per_epoch="$STEPS" \
    --set train.precision=fp32
ray_train fr 60 --set train.tfr=0 --set train.max_steps_per_epoch="$STEPS"
# Epoch 1 compiles (its seconds against the later epochs' are the compile time)
[ -z "$QUICK" ] && ray_train fr_compiled 70 --set train.tfr=0 \
    --set train.max_steps_per_epoch="$STEPS" --set run.compile=true

# A sweep of the trials a space names (each trial 2 short epochs); prints its wall time.
sweep() {  # name, limit, space file, extra args...
    local name=$1 limit=$2 space=$3; shift 3
    rm -rf "$WORK/$name"
    sample_start "$OUT/smi_$name.csv"
    local start; start=$(date +%s)
    timeout $((limit * SLOW)) $PY -m ray_jobs.tune --space "$space" --data "$DATA.pack" \
        --out "$WORK/$name" "${MODEL[@]}" --set train.batch_size="$BATCH" --epochs 2 \
        --grace-period 2 --set train.max_steps_per_epoch=10 --set run.progress=false "$@" \
        > "$WORK/$name.log" 2>&1
    local rc=$?
    sample_stop "$OUT/smi_$name.csv" "$name nvidia-smi"
    tail -3 "$WORK/$name.log"
    fig "$name: rc $rc, wall $(( $(date +%s) - start )) s, $(ls "$WORK/$name/trials" 2>/dev/null | wc -l) trial folders"
}

log "3. sweeps: 1 trial alone, then 8 trials sharing the GPU"
echo "train.tfr_d_step: {grid: [0.5]}" > "$WORK/one.yaml"
echo "train.tfr_d_step: {grid: [$(seq -s ', ' 0.1 0.1 "0.$SHARED")]}" > "$WORK/shared.yaml"
sweep sweep1 70 "$WORK/one.yaml" "${GPU[@]}" --max-concurrent 1
sweep "sweep$SHARED" 100 "$WORK/shared.yaml" "${SHARE[@]}" --max-concurrent "$SHARED" \
    --cpus-per-worker 1

log "figures"
cat "$FIG"
ls -la "$OUT"
log "done"
