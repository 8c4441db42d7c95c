#!/usr/bin/env bash
# One prepared GPU session (issue 14): install, CUDA tests, throughput, then prdarts_c10 (36 channels / 20 cells)
# pretrain -> prune -> finetune at k = 0.01 on the full CIFAR-10 (JPEG copy) with a schedule sized to the
# minutes left, its evaluation and its Hub folder. Everything lands in $OUT (6 files).
#
# On the device machine (the data travels with the checkout: cp ../shared/data/cifar10-jpeg.tar.gz data/, and
# name data/cifar10-jpeg.tar.gz in carry; data/ is ignored by git):
#     OUT=$OUT bash benchmarks/gpu_session.sh
# A rehearsal on the CPU with a tiny budget (mini CIFAR-10, an 8-channel / 3-cell network, no install; the test
# suite runs this):
#     OUT=/tmp/out bash benchmarks/gpu_session.sh --dry
#
# BUDGET_S (default 540 = 9 minutes; 300 dry: a cap, the dry run needs well under it on an idle CPU) is the wall clock of the whole script; the training gets what
# the steps before it left, minus a reserve for evaluation and export.
set -uo pipefail
DRY=0
[[ "${1:-}" == "--dry" ]] && DRY=1
: "${OUT:?set OUT to the folder the results go to}"
mkdir -p "$OUT"
BUDGET_S=${BUDGET_S:-$(( DRY ? 300 : 540 ))}
START=$(date +%s)
left() { echo $(( BUDGET_S - ($(date +%s) - START) )); }
WORK=$(mktemp -d "${TMPDIR:-/tmp}/prdarts_gpu_session.XXXXXX")
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
exec > >(tee -a "$OUT/session.log") 2>&1
cd "$(dirname "$0")/.."
echo "== gpu_session: dry=$DRY budget=${BUDGET_S}s work=$WORK $(date -u +%FT%TZ)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "(no nvidia-smi)"

echo "== 1. install ($(left)s left)"
if (( DRY )); then echo "dry: not installing (the checkout is installed already)"
else pip install --no-deps -e . -q || { echo "install failed"; exit 1; }
fi
python -c "import torch, timm, accelerate, prdarts_timm; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'timm', timm.__version__, 'accelerate', accelerate.__version__)"

echo "== 2. pytest -m cuda ($(left)s left)"
timeout 150 python -m pytest -m cuda -q -p no:cacheprovider tests/test_cuda.py > "$OUT/pytest_cuda.txt" 2>&1
echo "pytest -m cuda exit $?: $(tail -1 "$OUT/pytest_cuda.txt")"

echo "== 3. throughput ($(left)s left)"
timeout 120 python benchmarks/gpu_throughput.py --output "$OUT/throughput.json" $( (( DRY )) && echo --dry ) \
    || echo "throughput exit $?"

echo "== 4. data ($(left)s left)"
if (( DRY )); then
    DATA=(--data_source mini)
    EVAL_DATA=(--data_source mini)
    MODEL=(--model prdarts_c10 --model_kwargs C=8 layers=3 --batch_size 16 --max_steps_per_epoch 2
           --eval_max_batches 1 --checkpoint_every 100000)
    EVAL_MODEL=(--model prdarts_c10 --model_kwargs C=8 layers=3)
    ACCEL=(--cpu)
else
    tar -xzf "${DATA_TAR:-data/cifar10-jpeg.tar.gz}" -C "$WORK" || { echo "no data: copy the tar to data/"; exit 1; }
    DATA=(--data_source imagefolder --data_root "$WORK/cifar10" --num_workers 8)
    EVAL_DATA=(--data_source imagefolder --data_root "$WORK/cifar10" --device cuda --num_workers 8)
    MODEL=(--model prdarts_c10 --eval_max_batches 20)
    EVAL_MODEL=(--model prdarts_c10)
    ACCEL=()
fi

echo "== 5. train ($(left)s left)"
RESERVE=$(( DRY ? 40 : 75 ))  # evaluation (test split, latency) and export
TRAIN_S=$(( $(left) - RESERVE )); (( TRAIN_S > 0 )) || TRAIN_S=1  # none left: the stage is cut off at once
read -r P Q R < <(python - "$OUT/throughput.json" "$TRAIN_S" "$DRY" <<'EOF'
import json, sys
path, seconds, dry = sys.argv[1], float(sys.argv[2]), sys.argv[3] == '1'
if dry:
    print(1, 1, 1)
    raise SystemExit
try:
    ips = json.load(open(path))['retrain']['bf16_channels_last']['img_s']
except (OSError, KeyError, ValueError):
    ips = 1000.0  # no measurement: a guess, the timeout below still holds
epochs = max(3, int(0.7 * seconds * ips / 50_000))  # 0.7: evaluation per epoch, data, start-up
p = max(1, epochs // 2); q = max(1, epochs // 4); r = max(1, epochs - p - q)
print(p, q, r)
EOF
)
echo "schedule: pretrain $P, prune $Q, finetune $R epoch(s) in at most ${TRAIN_S}s"
timeout "$TRAIN_S" accelerate launch ${ACCEL[@]+"${ACCEL[@]}"} recipes/train.py \
    ${ACCEL[@]+"${ACCEL[@]}"} --config recipes/configs/train_cifar10.yaml --output "$WORK/run" "${DATA[@]}" \
    "${MODEL[@]}" --mixed_precision bf16 --pretrain_epochs "$P" --prune_epochs "$Q" --finetune_epochs "$R" \
    --log_every 50
echo "train exit $?"
python - "$WORK/run" "$OUT/summaries.json" <<'EOF'
import json, sys
from pathlib import Path
run = Path(sys.argv[1])
out = {s: json.loads((run / s / 'summary.json').read_text()) for s in ('pretrain', 'prune', 'finetune')
       if (run / s / 'summary.json').exists()}
for name in ('config.yaml', 'launch.json'):
    if (run / name).exists():
        out[name] = (run / name).read_text()
Path(sys.argv[2]).write_text(json.dumps(out, indent=1))
print('stages done:', [s for s in out if not s.endswith(('.yaml', '.json'))])
EOF

echo "== 6. evaluate ($(left)s left)"
BAKED="$WORK/run/finetune/model_baked.safetensors"
if [[ -f "$BAKED" ]]; then
    timeout $(( $(left) > 30 ? $(left) - 20 : 10 )) python recipes/evaluate.py "${EVAL_MODEL[@]}" --checkpoint "$BAKED" \
        "${EVAL_DATA[@]}" --latency_repeats 20 --output "$WORK/eval.json" && cp "$WORK/eval.json" "$OUT/evaluate.json"
    echo "== 7. export ($(left)s left)"
    NAME=prdarts_c10.sp99_cifar10
    python recipes/export.py --run "$WORK/run" --evaluation "$WORK/eval.json" --name "$NAME" \
        --hub_id "prdarts-timm/$NAME" --output "$WORK/hub/$NAME" --sparse \
        && tar -czf "$OUT/$NAME.hub.tar.gz" -C "$WORK/hub" "$NAME" && echo "hub folder: $OUT/$NAME.hub.tar.gz"
else
    echo "no finetune output: the schedule did not fit (see the train log above)"
fi
echo "== done in $(( $(date +%s) - START ))s; files: $(ls "$OUT" | tr '\n' ' ')"
rm -rf "$WORK"
