#!/usr/bin/env bash
# Publish networks of the replication (run.sh) as pretrained tags: evaluate the baked weights on the embedded
# mini test split too (the figure tests/test_published.py checks), export the Hub folder hub/<tag> (card,
# config, compact file) and bundle its compact file into prdarts_timm/weights (index.json).
#
#   bash benchmarks/replicate_cifar10_cpu/publish.sh runs/replicate prdarts_c10_micro k0.01 sp99_cifar10 [HUB_ORG]
#   bash benchmarks/replicate_cifar10_cpu/publish.sh runs/flagship prdarts_c10 dense dense_cifar10   # a dense tag
set -euo pipefail
RUNS=${1:?usage: publish.sh RUNS NETWORK RUN TAG [HUB_ORG]}
NETWORK=${2:?}; RUN=${3:?}; TAG=${4:?}; ORG=${5:-prdarts-timm}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} HF_HUB_OFFLINE=1
# RUN dense: the run's pretrain network (a dense tag, e.g. dense_cifar10), no compact file; else its baked finetune
if [ "$RUN" = dense ]; then
  STAGE=pretrain; WEIGHTS=$RUNS/$NETWORK/dense/pretrain/model.safetensors; COMPACT=()
else
  STAGE=finetune; WEIGHTS=$RUNS/$NETWORK/$RUN/finetune/model_baked.safetensors; COMPACT=(--sparse)
fi
MINI=$RUNS/$NETWORK/eval_${RUN}_mini.json
[ -f "$MINI" ] || python recipes/evaluate.py --model "$NETWORK" --checkpoint "$WEIGHTS" --data_source mini \
  --split test --no_latency --output "$MINI"
python recipes/export.py --run "$RUNS/$NETWORK/$RUN" --stage $STAGE --evaluation "$RUNS/$NETWORK/eval_$RUN.json" \
  --more_evaluations "$MINI" --name "$NETWORK.$TAG" --hub_id "$ORG/$NETWORK.$TAG" --output "hub/$NETWORK.$TAG" \
  "${COMPACT[@]}" --bundle --overwrite
