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
source "$(dirname "$0")/../train_and_evaluate.sh"  # train, evaluate, dense, sparse

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
wait_streams $stream_a $stream_b
