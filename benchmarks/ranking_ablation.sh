#!/usr/bin/env bash
# The ranking ablation: supernets that differ from the demo's in one training option, ranked by
# benchmarks/ranking.py on the same 30 archs against the same standalone truth (and its noise
# ceiling). Run after benchmarks/search_vs_baselines.py, whose three seeds' supernets are rows too.
#   bash benchmarks/ranking_ablation.sh            # CPU, ~25 min on 2 cores
set -euo pipefail
PY=${PY:-.venv/bin/python}
SEEDS=${SEEDS:-runs/search_vs_baselines}
WORK=${WORK:-runs/ranking_ablation}
# the demo's supernet (search/pipeline.py): tiny_one_stage, 24 epochs, stage-matched, user-averaged gradients
DEMO=(--space tiny_one_stage --epochs 24 --batch-size 16 --seed 0 --workers 2 --device cpu --eval-images 100
      --train-blocks ir_k3_e6)
train() {  # NAME, then the options that differ from the demo's
  local name=$1; shift
  if [ ! -f "$WORK/$name/result.done" ]; then
    "$PY" train_supernet.py "${DEMO[@]}" "$@" --out "$WORK/$name" $( [ -f "$WORK/$name/last.pt" ] && echo --resume )
    touch "$WORK/$name/result.done"
  fi
}
train epochs10 --epochs 10
"$PY" benchmarks/ranking.py --lut "$SEEDS/seed0/latency_cpu.json" -k 30 --ceiling-archs 15 --device cpu \
  --work "$WORK/standalone" --out benchmarks/results/ranking_cpu_tiny_one_stage_ablation.json \
  --supernet demo="$SEEDS/seed0/supernet/last.pt" seed1="$SEEDS/seed1/supernet/last.pt" seed2="$SEEDS/seed2/supernet/last.pt" \
             epochs10="$WORK/epochs10/last.pt"
