#!/usr/bin/env bash
# The ranking ablation: supernets that differ from the demo's in one training option, each ranked
# by benchmarks/ranking.py on the same 30 archs against the same stored 12-epoch standalone truth
# and its noise ceiling (--truth: nothing is retrained; the rows already in the file stay).
#   bash benchmarks/ranking_ablation.sh                 # CPU, ~12 min a row on 2 cores
#   ROWS="uniform1_e72 fair3" bash benchmarks/ranking_ablation.sh
#   OUT=benchmarks/results/ranking_cpu_tiny_one_stage_fcos128.json ROWS="wide_e144 wide_e144_fcos128" bash ...
#     (the 16 archs of the FCOS-128 region; a *_fcos128 row fine-tunes the row before it on that region).
#     A row replaces the stored row of its name: the committed file keeps the first wide_e144 rows and
#     has the supernets trained again, and their fine-tunes, as rows *_again and *_again_fcos128.
set -euo pipefail
PY=${PY:-.venv/bin/python}
WORK=${WORK:-runs/ablation}
OUT=${OUT:-benchmarks/results/ranking_cpu_tiny_one_stage_e12_ablation.json}
TRUTH=${OUT%.json}.points.json
[ -f "$TRUTH" ] || TRUTH=benchmarks/results/ranking_cpu_tiny_one_stage_e12.points.json
# what every row shares with the demo's supernet (search/pipeline.py): tiny_one_stage, stage-matched
BASE=(--space tiny_one_stage --batch-size 16 --seed 0 --workers 2 --device cpu --eval-images 100 --train-blocks ir_k3_e6)
declare -A OPTIONS=(
  [sandwich24]="--sampler sandwich --epochs 24 --width-sampling uniform"
  [uniform3]="--sampler uniform --random-paths 3 --epochs 24 --width-sampling uniform"
  [fair3]="--sampler fair --random-paths 3 --epochs 24 --width-sampling uniform"
  [uniform1_e72]="--sampler uniform --random-paths 1 --epochs 72 --width-sampling uniform"
  [kd_backbone]="--sampler sandwich --epochs 24 --distill 1.0 --distill-features backbone --width-sampling uniform"
  [wide_e72]="--sampler uniform --random-paths 1 --epochs 72 --width-sampling wide"
  [wide_e72_seed1]="--sampler uniform --random-paths 1 --epochs 72 --width-sampling wide --seed 1"
  [wide_e72_seed2]="--sampler uniform --random-paths 1 --epochs 72 --width-sampling wide --seed 2"
  [wide_e72_ema]="--sampler uniform --random-paths 1 --epochs 72 --width-sampling wide --ema 0.998"
  [wide_e72_ema_seed1]="--sampler uniform --random-paths 1 --epochs 72 --width-sampling wide --ema 0.998 --seed 1"
  [wide_e72_ema_seed2]="--sampler uniform --random-paths 1 --epochs 72 --width-sampling wide --ema 0.998 --seed 2"
  [deep_e72]="--sampler uniform --random-paths 1 --epochs 72 --width-sampling wide --depth-sampling deep"
  [deep_e72_seed1]="--sampler uniform --random-paths 1 --epochs 72 --width-sampling wide --depth-sampling deep --seed 1"
  [deep_e72_seed2]="--sampler uniform --random-paths 1 --epochs 72 --width-sampling wide --depth-sampling deep --seed 2"
  [smallest_e72]="--sampler smallest --random-paths 1 --epochs 72 --width-sampling wide"
  [smallest_e72_seed1]="--sampler smallest --random-paths 1 --epochs 72 --width-sampling wide --seed 1"
  [smallest_e72_seed2]="--sampler smallest --random-paths 1 --epochs 72 --width-sampling wide --seed 2"
  [twin_e72]="--sampler narrow_twin --random-paths 1 --epochs 72 --width-sampling wide"
  [twin_e72_seed1]="--sampler narrow_twin --random-paths 1 --epochs 72 --width-sampling wide --seed 1"
  [twin_e72_seed2]="--sampler narrow_twin --random-paths 1 --epochs 72 --width-sampling wide --seed 2"
  [wide_e144]="--sampler uniform --random-paths 1 --epochs 144 --width-sampling wide"
  [wide_e144_seed1]="--sampler uniform --random-paths 1 --epochs 144 --width-sampling wide --seed 1"
  [wide_e144_seed2]="--sampler uniform --random-paths 1 --epochs 144 --width-sampling wide --seed 2"
  # few-shot NAS: the supernet fine-tuned on the region where the search's picks lie (128 px, FCOS)
  [wide_e144_fcos128]="--start-from $WORK/wide_e144/last.pt --train-resolutions 128 --train-heads fcos --epochs 48 --lr 0.01"
  [wide_e144_seed1_fcos128]="--start-from $WORK/wide_e144_seed1/last.pt --train-resolutions 128 --train-heads fcos --epochs 48 --lr 0.01 --seed 1"
  [wide_e144_seed2_fcos128]="--start-from $WORK/wide_e144_seed2/last.pt --train-resolutions 128 --train-heads fcos --epochs 48 --lr 0.01 --seed 2"
  [gn_e72]="--sampler uniform --random-paths 1 --epochs 72 --width-sampling wide --norm gn"
)
ROWS=${ROWS:-"uniform3 fair3 uniform1_e72 kd_backbone"}
for name in $ROWS; do
  if [ ! -f "$WORK/$name/result.done" ]; then
    # shellcheck disable=SC2086
    "$PY" train_supernet.py "${BASE[@]}" ${OPTIONS[$name]} --out "$WORK/$name" $( [ -f "$WORK/$name/last.pt" ] && echo --resume )
    touch "$WORK/$name/result.done"
  fi
  "$PY" benchmarks/ranking.py --truth "$TRUTH" --device cpu --out "$OUT" --supernet "$name=$WORK/$name/last.pt"
  TRUTH=${OUT%.json}.points.json
done
