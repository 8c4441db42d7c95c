#!/usr/bin/env bash
# Issue 15's weights on a CPU budget (recipes/configs/weights_cifar10_cpu.yaml): prdarts_c10_micro pretrained
# once (dense), then pruned + finetuned from it at k = 0.1, 0.05 and 0.01 (90 / 95 / 99%), and at 99% once more
# with one global threshold (global_k: true) for the per-layer / global comparison. Two single-thread streams
# side by side on a 2-core CPU; every network is evaluated by recipes/evaluate.py on the full test split.
# Re-running continues where it stopped: a finished step is skipped, an interrupted one resumes.
#
#   bash benchmarks/weights_cifar10_cpu/run.sh /path/to/cifar10 [runs/weights]
#
# Then publish each tag with benchmarks/replicate_cifar10_cpu/publish.sh (RUNS = the OUTPUT here).
set -euo pipefail
DATA=${1:?usage: run.sh DATA_ROOT [OUTPUT]}
OUT=${2:-runs/weights}
CONFIG=recipes/configs/weights_cifar10_cpu.yaml
source "$(dirname "$0")/../train_and_evaluate.sh"  # train, evaluate, dense, sparse

NET=prdarts_c10_micro
ARGS=(--model $NET -- --model $NET)
mkdir -p "$OUT/$NET"
dense $NET "${ARGS[@]}"  # 15 epochs: the long part, before the streams split
global_99() {
  local out=$OUT/$NET/k0.01_global
  train "$NET k=0.01 global" "$out" finetune --stages '[prune, finetune]' --k 0.01 --global_k true \
    --source "$OUT/$NET/dense/pretrain/model.safetensors" --model $NET
  evaluate "$NET k=0.01 global" "$out/finetune/model_baked.safetensors" "$OUT/$NET/eval_k0.01_global.json" \
    --model $NET
}
{ sparse $NET 0.1 "${ARGS[@]}"; sparse $NET 0.01 "${ARGS[@]}"; } > "$OUT/stream_a.log" 2>&1 &
stream_a=$!
{ sparse $NET 0.05 "${ARGS[@]}"; global_99; } > "$OUT/stream_b.log" 2>&1 &
stream_b=$!
wait_streams $stream_a $stream_b
