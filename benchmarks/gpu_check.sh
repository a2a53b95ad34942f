#!/usr/bin/env bash
# The GPU checks of the latency table, as one prepared run for a machine that has a CUDA GPU but no
# package registry (the device machines: torch and timm are there, the COCO evaluators not).
#
#   bash benchmarks/gpu_check.sh wheels        # here, with pip access: the missing wheels into .whl/
#   bash benchmarks/gpu_check.sh run           # there: OUT=dir (default runs/gpu_check)
#
# `run` installs .whl/ (if present) into /tmp/site, then for the coco space in fp16 at each batch
# size in BATCHES (default "1 8") builds the table and validates it on 50 subnets with
# benchmarks/latency_table.py (its JSON lines printed at the end; tables, plots and results with
# their points in $OUT), and between the two runs a CUDA smoke of supernet training under each
# AMP mode in AMPS (default "fp16 bf16"; 20 steps, tiny space; $OUT/smoke_<amp>.log) and the training
# throughput of the SPACE supernet under bf16 (benchmarks/train_throughput.py; the images/s that
# configs/ turns into GPU-hours). Each step has its own time limit (LIMIT s per table), so one that
# runs long leaves time for the rest; a build cut short resumes from its .partial in LUT_DIR.
# Anything else can be overridden too: DEVICE, SPACE, DTYPE (CPU dry run: DEVICE=cpu DTYPE=fp32).
set -euo pipefail
cd "$(dirname "$0")/.."

WHEELS="pycocotools==2.0.11 faster-coco-eval==1.8.0"

case "${1:-}" in
wheels)
    mkdir -p .whl
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d .whl $WHEELS
    ls -l .whl
    ;;
run)
    OUT=${OUT:-runs/gpu_check}
    LUT_DIR=${LUT_DIR:-$OUT}
    DEVICE=${DEVICE:-cuda:0}
    SPACE=${SPACE:-coco}
    DTYPE=${DTYPE:-fp16}
    BATCHES=${BATCHES:-"1 8"}
    LIMIT=${LIMIT:-220}  # seconds per table (build + validation): two tables and the smoke fit a 10-minute call
    mkdir -p "$OUT" "$LUT_DIR"
    if compgen -G ".whl/*.whl" >/dev/null; then
        if python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl; then
            export PYTHONPATH=/tmp/site
        else  # (the wheels are for Python 3.12, the device machines')
            echo "warning: the wheels in .whl/ do not install on this python; going on with what is installed" >&2
        fi
    fi
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
    python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'cuda', torch.version.cuda,
                torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')"
    name=$(basename "$SPACE"); name=${name%.*}
    first=1
    for bs in $BATCHES; do
        log=/tmp/latency_bs$bs.log
        if timeout "$LIMIT" python3 benchmarks/latency_table.py --space "$SPACE" --device "$DEVICE" --dtype "$DTYPE" --batch-size "$bs" \
            --samples 50 --lut-dir "$LUT_DIR" --out "$OUT/latency_${name}_${DTYPE}_bs$bs.json" >>/tmp/latency.jsonl 2>"$log"; then
            echo "latency table bs $bs: done" >&2
        else
            echo "latency table bs $bs: stopped (exit $?); the end of $log:" >&2
            tail -n 5 "$log" | tr '\r' '\n' | tail -n 5 >&2
        fi
        if [ "$first" = 1 ]; then  # the CUDA paths of training, between the tables
            first=0
            for amp in ${AMPS:-fp16 bf16}; do
                if timeout 60 python3 train_supernet.py --space tiny --device "$DEVICE" --amp "$amp" --steps 20 --batch-size 8 --eval-every 0 \
                    --out "/tmp/smoke_supernet_$amp" >"$OUT/smoke_$amp.log" 2>&1; then
                    echo "smoke: train_supernet --amp $amp ok" >&2
                else
                    echo "smoke: train_supernet --amp $amp failed (exit $?), see $OUT/smoke_$amp.log" >&2
                fi
            done
            if [ "${THROUGHPUT:-1}" = 1 ]; then
                if timeout "${THROUGHPUT_LIMIT:-120}" python3 benchmarks/train_throughput.py --space "$SPACE" --device "$DEVICE" --amp bf16 \
                    --archs 4 --steps 3 --batch-size "${THROUGHPUT_BATCH:-16}" --out "$OUT/train_throughput_${name}_bf16.json" \
                    >/dev/null 2>/tmp/throughput.log; then
                    echo "train throughput: done" >&2
                else
                    echo "train throughput: stopped (exit $?); the end of /tmp/throughput.log:" >&2
                    tail -n 5 /tmp/throughput.log >&2
                fi
            fi
        fi
    done
    cat /tmp/latency.jsonl 2>/dev/null || true
    ;;
*)
    echo "usage: bash benchmarks/gpu_check.sh wheels|run" >&2
    exit 2
    ;;
esac
