#!/usr/bin/env bash
# One batched GPU-host session: the cuda backend's differential checks and benchmarks (bundled runner), the
# PyTorch peers on the same card, then compute-sanitizer on the kernel harnesses. Needs .gpu/ (carry it):
# node.xz (shared/gpu/pack-node.sh), gpu-check.mjs and zipvl_native.node (node bench/bundle.mjs).
# Usage on the GPU host: bash bench/gpu-run.sh [--quick]
set -uo pipefail
OUT=${OUT:-/tmp/zipvl-out}; mkdir -p "$OUT"
quick=""; for a in "$@"; do [ "$a" = --quick ] && quick=--quick; done
xz -dc .gpu/node.xz > /tmp/node && chmod +x /tmp/node && export PATH=/tmp:/usr/local/cuda/bin:$PATH
export ZIPVL_TEMPLATES=$PWD/templates ZIPVL_NATIVE_ADDON=$PWD/.gpu/zipvl_native.node ZIPVL_CACHE_DIR=/tmp/zvcache
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee "$OUT/card.txt"
inc="-I templates/cuda/include"
# The harnesses build in the background (for compute-sanitizer at the end).
(nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a $inc test/cuda/harness_sparse_attn.cu -o /tmp/h_attn > /tmp/h_attn.log 2>&1) &
(nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a $inc test/cuda/harness_probe_select_decode.cu -o /tmp/h_psd > /tmp/h_psd.log 2>&1) &
echo "== zipvl cuda backend vs interpreter, benchmarks"
timeout 290 node .gpu/gpu-check.mjs "$OUT" $quick 2>&1 | tee "$OUT/gpu-check.txt" | grep -v "^    at " | tail -70
echo "== peers"
PYTHONUNBUFFERED=1 timeout 170 python3 bench/peers.py --out "$OUT/peers.json" --quick 2>&1 > "$OUT/peers.txt"; tail -45 "$OUT/peers.txt"
wait
echo "== compute-sanitizer"
for tool in memcheck racecheck; do
  [ -x /tmp/h_psd ] && timeout 45 compute-sanitizer --tool $tool --print-limit 3 /tmp/h_psd --quick --no-bench 2>&1 | tail -3 | tee -a "$OUT/sanitizer.txt"
  [ -x /tmp/h_attn ] && timeout 45 compute-sanitizer --tool $tool --print-limit 3 /tmp/h_attn --quick --no-timing 2>&1 | tail -3 | tee -a "$OUT/sanitizer.txt"
done
