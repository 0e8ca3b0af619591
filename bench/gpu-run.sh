#!/usr/bin/env bash
# One batched GPU-host session: kernel harnesses, compute-sanitizer, the differential checks and benchmarks of
# the cuda backend (bundled runner), and the PyTorch peers on the same card. Needs .gpu/ (carry it):
# node.xz (shared/gpu/pack-node.sh), gpu-check.mjs and zipvl_native.node (node bench/bundle.mjs).
# Usage on the GPU host: bash bench/gpu-run.sh [--quick] [--skip-peers] [--skip-sanitizer]
set -uo pipefail
OUT=${OUT:-/tmp/zipvl-out}; mkdir -p "$OUT"
quick=""; peers=1; sanitizer=1
for a in "$@"; do case $a in --quick) quick=--quick;; --skip-peers) peers=0;; --skip-sanitizer) sanitizer=0;; esac; done
xz -dc .gpu/node.xz > /tmp/node && chmod +x /tmp/node && export PATH=/tmp:/usr/local/cuda/bin:$PATH
export ZIPVL_TEMPLATES=$PWD/templates ZIPVL_NATIVE_ADDON=$PWD/.gpu/zipvl_native.node ZIPVL_CACHE_DIR=/tmp/zvcache
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee "$OUT/card.txt"
inc="-I templates/cuda/include"
(nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a $inc test/cuda/harness_sparse_attn.cu -o /tmp/h_attn &
 nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a $inc test/cuda/harness_probe_select_decode.cu -o /tmp/h_psd &
 wait) 2>&1 | tail -5
echo "== harnesses"; timeout 240 /tmp/h_attn $quick 2>&1 | tee "$OUT/harness_attn.txt" | tail -25
timeout 240 /tmp/h_psd $quick 2>&1 | tee "$OUT/harness_psd.txt" | tail -25
echo "== zipvl cuda backend vs interpreter + benchmarks"; timeout 300 node .gpu/gpu-check.mjs "$OUT" $quick 2>&1 | tee "$OUT/gpu-check.txt" | tail -60
if [ $peers = 1 ]; then echo "== peers"; PYTHONUNBUFFERED=1 timeout 240 python3 bench/peers.py --out "$OUT/peers.json" --quick 2>&1 | tee "$OUT/peers.txt" | tail -45; fi
if [ $sanitizer = 1 ]; then
  echo "== compute-sanitizer"
  for tool in memcheck racecheck; do
    timeout 120 compute-sanitizer --tool $tool --print-limit 5 /tmp/h_attn --quick --no-timing 2>&1 | tail -4 | tee -a "$OUT/sanitizer.txt"
    timeout 120 compute-sanitizer --tool $tool --print-limit 5 /tmp/h_psd --quick --no-bench 2>&1 | tail -4 | tee -a "$OUT/sanitizer.txt"
  done
fi
