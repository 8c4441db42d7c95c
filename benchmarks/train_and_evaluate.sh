# Functions shared by the CPU training scripts (benchmarks/replicate_cifar10_cpu/run.sh,
# benchmarks/weights_cifar10_cpu/run.sh): train / evaluate one run folder, skipping what is done and resuming
# what was interrupted. Source it with CONFIG (the recipe config), DATA (the ImageFolder root) and OUT (the
# folder of all runs) set.
if ! [[ ${THREADS:-1} =~ ^[1-9][0-9]*$ ]]; then
  echo "THREADS='$THREADS': set it to the torch threads of each run, a whole number >= 1 (e.g. THREADS=2), or leave it" \
    "unset for 1" >&2
  exit 2
fi
export OMP_NUM_THREADS=${THREADS:-1} MKL_NUM_THREADS=${THREADS:-1} HF_HUB_OFFLINE=1
# the package of the checkout this file is in, ahead of the one pip installed (an editable install points at another
# checkout): a run from a `git worktree` of a fixed commit then runs that commit's library, not the main checkout's
export PYTHONPATH="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)${PYTHONPATH:+:$PYTHONPATH}"
# one process on one thread (THREADS=2: one run with a 2-core machine to itself, e.g. while the other stream waits
# for it): plain python with OMP_NUM_THREADS (accelerate's launcher would add nothing for one CPU process, and the
# recipes read the launcher's OMP_NUM_THREADS=1 as its default, not a request: every core)
LAUNCH=(python)

# train NAME OUTPUT LAST_STAGE ARGS...: run (or resume) recipes/train.py unless LAST_STAGE is complete
train() {
  local name=$1 out=$2 last=$3; shift 3
  if [ -f "$out/$last/summary.json" ]; then echo "[$name] done: $out"; return; fi
  local resume=()
  [ -f "$out/config.yaml" ] && resume=(--resume)
  echo "[$name] $(date -u +%FT%TZ) train -> $out"
  if [ ${#resume[@]} = 0 ]; then : > "$out.log"; fi  # a resumed run's log keeps its earlier segments' lines
  "${LAUNCH[@]}" recipes/train.py --cpu --config "$CONFIG" --output "$out" --data_root "$DATA" "${resume[@]}" "$@" \
    >> "$out.log" 2>&1
}

# evaluate NAME CHECKPOINT JSON ARGS...: recipes/evaluate.py on the whole test split unless JSON exists. Batches of
# 32: one thread of a 2-core AMD EPYC forwards prdarts_c10 at 40 ms an image in batches of 16-32, 67 in batches of 200
evaluate() {
  local name=$1 ckpt=$2 json=$3; shift 3
  if [ -f "$json" ]; then echo "[$name] evaluated: $json"; return; fi
  echo "[$name] $(date -u +%FT%TZ) evaluate $ckpt"
  python recipes/evaluate.py --checkpoint "$ckpt" --data_source imagefolder --data_root "$DATA" --split test \
    --batch_size 32 --threads 1 --latency_repeats 20 --output "$json" "$@" > "${json%.json}.log" 2>&1
}

# dense NAME TRAIN_ARGS... -- EVAL_ARGS...: pretrain once (and evaluate it: the dense reference, or a dense tag)
dense() {
  local name=$1; shift
  local targs=(); while [ "$1" != "--" ]; do targs+=("$1"); shift; done; shift
  mkdir -p "$OUT/$name"
  train "$name" "$OUT/$name/dense" pretrain --stages '[pretrain]' "${targs[@]}"
  evaluate "$name" "$OUT/$name/dense/pretrain/model.safetensors" "$OUT/$name/eval_dense.json" "$@"  # latency too: a dense tag's card shows it
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

# wait_streams PID_A PID_B: wait for the two streams (logs $OUT/stream_a.log, stream_b.log); fails if either did
wait_streams() {
  local failed=0
  wait "$1" || { failed=1; echo "stream a failed: see $OUT/stream_a.log and the log it names last"; }
  wait "$2" || { failed=1; echo "stream b failed: see $OUT/stream_b.log and the log it names last"; }
  [ $failed = 0 ] && echo "all runs done: $OUT"
  return $failed
}
