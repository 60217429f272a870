#!/usr/bin/env bash
# The GPU path in one run, on a machine with one CUDA GPU (Ray not needed):
#   1. the training step on the GPU: ours vs the lab loop, fp32 and bf16 autocast (lab preset)
#   2. DDP over nccl around the same `fit` a Ray worker runs (benchmarks/ddp_fit.py)
#   3. how many epochs of longer training beat the copy-last baseline: four trainings side by
#      side (small fp32, small bf16, small with free-running from epoch 40, lab fp32; the lab's
#      frame output), each stopped after TRAIN_SECONDS; metrics.csv per epoch
#   4. the Tester on the small run's best checkpoint
# Usage: benchmarks/gpu_check.sh OUT_DIR   (PYTHON=python3 TRAIN_SECONDS=240 EPOCHS=150)
set -u
OUT=${1:?usage: benchmarks/gpu_check.sh OUT_DIR}
PY=${PYTHON:-python3}
TRAIN_SECONDS=${TRAIN_SECONDS:-240}
EPOCHS=${EPOCHS:-150}
QUICK=${QUICK:-}  # set: the smallest sizes, to check this script on a CPU
WORK=${WORK:-/tmp/gpu_check}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT" "$WORK"
log() { echo "== $(date +%T) $*"; }

log "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tail -n +1
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
torch.cuda.get_device_name() if torch.cuda.is_available() else '')"
nproc

DATA=$WORK/dance
log "synthetic data"
[ -d "$DATA" ] || $PY -m cvae.data_cli synth --out "$DATA" --quiet || exit 1

BENCH=(--preset lab --device cuda --bf16 --rounds 5)
[ -n "$QUICK" ] && BENCH=(--tiny --bf16)
log "train_step, lab preset, batch 2 (the lab's)"
timeout 120 $PY -m benchmarks.train_step "${BENCH[@]}" --json-out "$OUT/train_step_b2.json" 2>&1 \
    | grep -v "round\|warm-up"
log "train_step, lab preset, batch 16"
timeout 120 $PY -m benchmarks.train_step "${BENCH[@]}" --batch 16 \
    --json-out "$OUT/train_step_b16.json" 2>&1 | grep -v "round\|warm-up"

# The earlier quickstart recipe (teacher forcing, frame output; batch 2 in one process) with
# room to learn: the runs README.md's GPU figures come from.
COMMON=(--data "$DATA" --epochs "$EPOCHS" --set run.progress=false --set data.loader_workers=2
        --set train.batch_size=2 --set train.kl_anneal_type=None --set train.lr=5e-4
        --set train.per_save=0 --set "train.lr_milestones=[100,130]" --set run.threads=4)
[ -n "$QUICK" ] && COMMON+=(--set model.frame_channels=8 --set model.label_channels=4
    --set model.latent_channels=4 --set model.decoder_channels=8 --set validation.val_len=6
    --set train.max_steps_per_epoch=2 --set test.seq_len=6)
log "DDP (nccl on a GPU) around fit: 2 epochs"
timeout 120 $PY -m benchmarks.ddp_fit --preset small "${COMMON[@]}" --epochs 2 \
    --out "$WORK/ddp" 2>&1 | tail -4

log "trainings side by side for ${TRAIN_SECONDS}s"
train() {  # name, extra args...
    local name=$1; shift
    timeout "$TRAIN_SECONDS" $PY -m cvae.train_cli "${COMMON[@]}" --out "$WORK/$name" "$@" \
        > "$WORK/$name.log" 2>&1
}
train small_tf --preset small --set train.tfr_sde=1000 &
train small_tf_bf16 --preset small --set train.tfr_sde=1000 --set train.bf16=true &
train small_fr40 --preset small --set train.tfr_sde=40 --set train.tfr_d_step=0.05 &
train lab_tf --preset lab --set train.tfr_sde=1000 &
wait
for run in small_tf small_tf_bf16 small_fr40 lab_tf; do
    log "$run: $(grep -c . "$WORK/$run/metrics.csv" 2>/dev/null) lines in metrics.csv"
    tail -3 "$WORK/$run.log"
    $PY - "$WORK/$run/metrics.csv" <<'PY'
import csv, sys
try:
    rows = list(csv.DictReader(open(sys.argv[1])))
except OSError as err:
    sys.exit(f"  no metrics: {err}")
if not rows:
    sys.exit("  no epoch finished")
beat = lambda r, k: float(r[f"val_psnr{k}"]) > float(r[f"baseline_psnr{k}"])
for k in ("_short", ""):
    first = next((r["epoch"] for r in rows if beat(r, k)), None)
    best = max(rows, key=lambda r: float(r[f"val_psnr{k}"]))
    print(f"  val_psnr{k}: first epoch above the baseline {first}; best {float(best[f'val_psnr{k}']):.2f}"
          f" at epoch {best['epoch']} (baseline {float(best[f'baseline_psnr{k}']):.2f});"
          f" s/epoch {sum(float(r['seconds']) for r in rows) / len(rows):.1f}")
PY
done

log "Tester on small_tf's best checkpoint"
timeout 120 $PY -m cvae.test_cli --checkpoint "$WORK/small_tf/checkpoints/best.pt" \
    --data "$DATA" --out "$WORK/test" 2>&1 | tail -4

log "collecting"
tar -czf "$OUT/runs.tar.gz" -C "$WORK" --exclude='*.pt' --exclude='tb' \
    --exclude='dance' --exclude='*.gif' . 2>/dev/null
ls -la "$OUT"
log "done"
