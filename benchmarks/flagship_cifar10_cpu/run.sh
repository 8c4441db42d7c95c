#!/usr/bin/env bash
# Issue 28's weights: prdarts_c10 (the paper's Small: 99% cell, 36 channels / 20 cells) and prdarts_c10_micro
# trained with the fast CPU schedule (recipes/configs/fast_cifar10.yaml, fp32, batch 128), in two one-thread
# streams side by side on a 2-core CPU (1.2x the work per wall second of one two-thread run, docs/results.md):
#   stream a: prdarts_c10 dense (30 epochs, progressive), then 99% (k 0.01, per layer: 3 prune + 6 finetune epochs)
#   stream b: prdarts_c10_micro dense (20 epochs, progressive), then 90 / 95% (1 + 3) and 99% (3 + 6), the budgets of
#             today's micro tags; then, once stream a's dense network exists, prdarts_c10 at 90% (1 + 4) and 95%
#             (1 + 2: the 40 CPU-hours are spent before it starts; the issue ranks 95% last, docs/results.md "Budget")
# Every network is evaluated by recipes/evaluate.py on the full test split. The sparse stages' prune length and
# distillation follow issue 27's micro comparisons (docs/results.md); they are set here before those stages run:
# the dense parent teaches at 90% and 95% (+1.22 and +3.04 points there), not at 99% (-0.87). At 99% the scores get 3
# of the 9 epochs (3 prune + 1 finetune beat 1 + 3 by 1.32 points at 99%).
# Re-running continues where it stopped: a finished step is skipped, an interrupted one resumes.
#
#   bash benchmarks/flagship_cifar10_cpu/run.sh /path/to/cifar10 [runs/flagship] [a|b|both]
#   THREADS=2 bash benchmarks/flagship_cifar10_cpu/run.sh /path/to/cifar10 runs/flagship a   # one stream, both cores
#
# Then publish each tag with benchmarks/replicate_cifar10_cpu/publish.sh (RUNS = the OUTPUT here).
set -euo pipefail
DATA=${1:?usage: run.sh DATA_ROOT [OUTPUT] [a|b|both]}
OUT=${2:-runs/flagship}
STREAMS=${3:-both}
CONFIG=recipes/configs/fast_cifar10.yaml
source "$(dirname "$0")/../train_and_evaluate.sh"  # train, evaluate, dense, sparse

FLAGSHIP=prdarts_c10
MICRO=prdarts_c10_micro
# progressive resizing (issue 27's pilot: 12 micro epochs, 9 of them at 16-24 px, beat 6 full-size ones by 1.1 points
# at about the same one-thread compute): the dense runs' leading epochs train at 16, 20, then 24 px, the last third
# at full size. Step cost at one thread against 32 px (benchmarks/bench_image_size.py): prdarts_c10 0.25x / 0.34x /
# 0.60x, micro 0.22x / 0.32x / 0.53x; so the flagship's 30 epochs cost about 17.6 full-size ones (the plan had 20)
# and the micro's 20 about 10.7 (the plan had 10).
FLAGSHIP_SIZES=[16,16,16,16,16,16,16,16,16,20,20,20,20,20,24,24,24,24,24,24]  # then 10 epochs at 32
MICRO_SIZES=[16,16,16,16,16,16,20,20,20,20,24,24,24,24]  # then 6 epochs at 32
stream_a() {
  dense $FLAGSHIP --model $FLAGSHIP --pretrain_epochs 30 --pretrain_image_sizes "$FLAGSHIP_SIZES" -- --model $FLAGSHIP
  sparse $FLAGSHIP 0.01 --model $FLAGSHIP --prune_epochs 3 --finetune_epochs 6 -- --model $FLAGSHIP
}
stream_b() {
  dense $MICRO --model $MICRO --pretrain_epochs 20 --pretrain_image_sizes "$MICRO_SIZES" -- --model $MICRO
  sparse $MICRO 0.1 --model $MICRO --prune_epochs 1 --finetune_epochs 3 --distill_from "$OUT/$MICRO/dense/pretrain" \
    -- --model $MICRO
  sparse $MICRO 0.05 --model $MICRO --prune_epochs 1 --finetune_epochs 3 --distill_from "$OUT/$MICRO/dense/pretrain" \
    -- --model $MICRO
  sparse $MICRO 0.01 --model $MICRO --prune_epochs 3 --finetune_epochs 6 -- --model $MICRO
  sparse $FLAGSHIP 0.1 --model $FLAGSHIP --prune_epochs 1 --finetune_epochs 4 --distill_from "$OUT/$FLAGSHIP/dense/pretrain" \
    -- --model $FLAGSHIP
  sparse $FLAGSHIP 0.05 --model $FLAGSHIP --prune_epochs 1 --finetune_epochs 2 --distill_from "$OUT/$FLAGSHIP/dense/pretrain" \
    -- --model $FLAGSHIP
}
mkdir -p "$OUT"
case $STREAMS in
  a) stream_a ;;
  b) stream_b ;;
  both)
    stream_a > "$OUT/stream_a.log" 2>&1 &
    a=$!
    stream_b > "$OUT/stream_b.log" 2>&1 &
    wait_streams $a $! ;;
  *) echo "run.sh: the third argument is a, b or both, not '$STREAMS'" >&2; exit 2 ;;
esac
