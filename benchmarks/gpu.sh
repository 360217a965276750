#!/usr/bin/env bash
# The GPU rows of the README's speed section: the paper's configuration (SAM ViT-H + 12-layer mixer + GPT-2 large,
# ~47 boxes per image as in TAP's VG setting) in fp16 and bf16, then ViT-B + GPT-2 for the CPU table's model.
# Usage: benchmarks/gpu.sh OUT_FOLDER   (with sca importable; each row runs in its own process)
set -uo pipefail
out=${1:?usage: benchmarks/gpu.sh OUT_FOLDER}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
bench() { timeout "$1" python3 -m sca bench speed --device cuda --models sca --runs 5 "${@:3}" --out "$out/$2" 2>&1 \
          | tee "$out/$2.log"; }
bench 200 paper --sam vit-h --lm gpt2-large --dtypes float16,bfloat16 --chunks 64 --regions 47 --scope api,model
bench 100 vitb --sam vit-b --lm gpt2 --dtypes float32,bfloat16 --chunks 64 --regions 64
bench 200 paper-static --sam vit-h --lm gpt2-large --dtypes float16,bfloat16 --chunks 64 --regions 47 --static-cache \
      --scope api,model
