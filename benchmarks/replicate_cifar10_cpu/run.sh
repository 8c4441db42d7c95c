#!/usr/bin/env bash
# The reduced-scale CIFAR-10 replication (issue 6): 4 networks x 2 sparsities from one budget
# (recipes/configs/replicate_cifar10_cpu.yaml), as two single-thread streams side by side on a 2-core CPU.
# Each network is pretrained once; prune + finetune run at k = 0.01 (99%) and k = 0.1 (90%) from the same
# pretrained weights; every finetuned network (and every pretrained one, as the dense reference) is evaluated
# by recipes/evaluate.py on the full test split. Re-running continues where it stopped: a finished step is
# skipped, an interrupted one resumes from its newest checkpoint.
#
#   bash benchmarks/replicate_cifar10_cpu/run.sh /path/to/cifar10 [runs/replicate]
set -euo pipefail
DATA=${1:?usage: run.sh DATA_ROOT [OUTPUT]}
OUT=${2:-runs/replicate}
CONFIG=${CONFIG:-recipes/configs/replicate_cifar10_cpu.yaml}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 HF_HUB_OFFLINE=1
LAUNCH=(accelerate launch --cpu --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no)

# train NAME OUTPUT LAST_STAGE ARGS...: run (or resume) recipes/train.py unless LAST_STAGE is complete
train() {
  local name=$1 out=$2 last=$3; shift 3
  if [ -f "$out/$last/summary.json" ]; then echo "[$name] done: $out"; return; fi
  local resume=()
  [ -f "$out/config.yaml" ] && resume=(--resume)
  echo "[$name] $(date -u +%FT%TZ) train -> $out"
  "${LAUNCH[@]}" recipes/train.py --config "$CONFIG" --output "$out" --data_root "$DATA" "${resume[@]}" "$@" \
    > "$out.log" 2>&1
}

# evaluate NAME CHECKPOINT JSON ARGS...: recipes/evaluate.py on the whole test split unless JSON exists
evaluate() {
  local name=$1 ckpt=$2 json=$3; shift 3
  if [ -f "$json" ]; then echo "[$name] evaluated: $json"; return; fi
  echo "[$name] $(date -u +%FT%TZ) evaluate $ckpt"
  python recipes/evaluate.py --checkpoint "$ckpt" --data_source imagefolder --data_root "$DATA" --split test \
    --batch_size 200 --threads 1 --latency_repeats 20 --output "$json" "$@" > "${json%.json}.log" 2>&1
}

# dense NAME TRAIN_ARGS... -- EVAL_ARGS...: pretrain once (and evaluate it: the dense reference)
dense() {
  local name=$1; shift
  local targs=(); while [ "$1" != "--" ]; do targs+=("$1"); shift; done; shift
  mkdir -p "$OUT/$name"
  train "$name" "$OUT/$name/dense" pretrain --stages '[pretrain]' "${targs[@]}"
  evaluate "$name" "$OUT/$name/dense/pretrain/model.safetensors" "$OUT/$name/eval_dense.json" "$@" --no_latency
}

# sparse NAME K TRAIN_ARGS... -- EVAL_ARGS...: prune + finetune from the pretrained weights at k = K
sparse() {
  local name=$1 k=$2; shift 2
  local targs=(); while [ "$1" != "--" ]; do targs+=("$1"); shift; done; shift
  local source=$OUT/$name/dense/pretrain/model.safetensors
  while [ ! -f "$OUT/$name/dense/pretrain/summary.json" ]; do sleep 30; done  # pretrained by the other stream
  train "$name k=$k" "$OUT/$name/k$k" finetune --stages '[prune, finetune]' --k "$k" --source "$source" \
    "${targs[@]}"
  evaluate "$name k=$k" "$OUT/$name/k$k/finetune/model_baked.safetensors" "$OUT/$name/eval_k$k.json" "$@"
}

P99=(prdarts_c10_micro --model prdarts_c10_micro -- --model prdarts_c10_micro)
CPU99=(prdarts_cpu_c10_micro --model prdarts_cpu_c10_micro -- --model prdarts_cpu_c10_micro)
DV2=(darts_v2_c10_micro --model darts_v2_c10_micro -- --model darts_v2_c10_micro)
MBV2=(mobilenetv2_035 --model mobilenetv2_035 --cifar_stem true -- --model mobilenetv2_035 --cifar_stem --num_classes 10)

# two streams of about equal length; DARTS-V2's 90% run waits in stream b for its pretraining in stream a
mkdir -p "$OUT"
{
  dense "${P99[@]}"; sparse "${P99[0]}" 0.01 "${P99[@]:1}"; sparse "${P99[0]}" 0.1 "${P99[@]:1}"
  dense "${DV2[@]}"; sparse "${DV2[0]}" 0.01 "${DV2[@]:1}"
} > "$OUT/stream_a.log" 2>&1 &
stream_a=$!
{
  dense "${CPU99[@]}"; sparse "${CPU99[0]}" 0.01 "${CPU99[@]:1}"; sparse "${CPU99[0]}" 0.1 "${CPU99[@]:1}"
  dense "${MBV2[@]}"; sparse "${MBV2[0]}" 0.01 "${MBV2[@]:1}"; sparse "${MBV2[0]}" 0.1 "${MBV2[@]:1}"
  sparse "${DV2[0]}" 0.1 "${DV2[@]:1}"
} > "$OUT/stream_b.log" 2>&1 &
stream_b=$!
failed=0
wait $stream_a || { failed=1; echo "stream a failed: see $OUT/stream_a.log and the log it names last"; }
wait $stream_b || { failed=1; echo "stream b failed: see $OUT/stream_b.log and the log it names last"; }
[ $failed = 0 ] && echo "all runs done: $OUT"
exit $failed
