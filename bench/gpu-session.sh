#!/usr/bin/env bash
# One batched GPU-host session in parts that each fit one device call (< 10 min), all results under $OUT.
# Needs .gpu/ (carry it): `../shared/gpu/pack-node.sh && ../shared/gpu/pack-vulkan.sh && node bench/bundle.mjs`.
#   bash bench/gpu-session.sh kernels   # harness (probe clusters, decode, GQA) + differential suite vs the interpreter
#   bash bench/gpu-session.sh bench     # zipvl tune (records for this card) then zipvl bench --peers with them
#   bash bench/gpu-session.sh model     # LLaVA-Next parity with transformers + 13B-shaped prefill/decode vs transformers
#   bash bench/gpu-session.sh serve     # paged decode/serving checks, serve bench (graph vs eager), 128k ZipVL prefill
#   bash bench/gpu-session.sh wgsl      # WGSL differential + throughput vs CUDA (bench/wgsl-gpu.sh --quick)
set -uo pipefail
OUT=${OUT:-/tmp/zipvl-out}; mkdir -p "$OUT"
xz -dc .gpu/node.xz > /tmp/node && chmod +x /tmp/node && export PATH=/tmp:/usr/local/cuda/bin:$PATH
export ZIPVL_TEMPLATES=$PWD/templates ZIPVL_NATIVE_ADDON=$PWD/.gpu/zipvl_native.node ZIPVL_CACHE_DIR=/tmp/zvcache
export ZIPVL_TUNING_DIR=/tmp/zvtuning; mkdir -p $ZIPVL_TUNING_DIR; cp generated/tuning/*.json $ZIPVL_TUNING_DIR/ 2>/dev/null
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv,noheader | tee "$OUT/card.txt"
strip() { tr '\r' '\n' | grep -v "^    at \|^      at \|^tune \[\|^  \.\.\. "; }
case "${1:-}" in
kernels)
  nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -I templates/cuda/include test/cuda/harness_probe_select_decode.cu -o /tmp/h_psd > "$OUT/harness-build.txt" 2>&1 &
  echo "== differential suite (nvcc kernels, fresh seed)"
  timeout 330 node .gpu/gpu-check.mjs "$OUT/check" --no-bench 2>&1 | tee "$OUT/gpu-check.txt" | strip | tail -25
  wait
  echo "== harness: checks, probe-by-cluster and decode tables"
  timeout 150 /tmp/h_psd 2>&1 | tee "$OUT/harness.txt" | grep -v "^ok " | tail -60
  echo "== memcheck (harness, checks only)"
  timeout 60 compute-sanitizer --tool memcheck --print-limit 3 /tmp/h_psd --no-bench 2>&1 | tail -3 | tee "$OUT/memcheck.txt" ;;
bench)
  echo "== tune"
  timeout 260 node .gpu/tune.mjs --budget 230 2>&1 | strip | grep -v "^  [a-z_]* .*configs" | tail -30
  cp -r "$ZIPVL_TUNING_DIR" "$OUT/tuning"
  echo "== bench --peers"
  timeout 320 node .gpu/bench.mjs --peers --out "$OUT/bench" 2>&1 | strip | tail -40 ;;
model)
  bash bench/gpu-model.sh --parts=acd --budget=540 2>&1 | grep -v "^Loading\|^Writing" | tail -60 ;;
serve)
  # The bytes floor uses PyTorch's copy_ rate on this card (read + write bytes of a 1 GiB bf16 copy, best of 5).
  CP=$(python3 -c "
import torch
x = torch.empty(2**29, dtype=torch.bfloat16, device='cuda'); y = torch.empty_like(x)
for _ in range(3): y.copy_(x)
s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True); best = 1e9
for _ in range(5):
  s.record(); y.copy_(x); e.record(); e.synchronize(); best = min(best, s.elapsed_time(e))
print('%.3f' % (4 * x.numel() / (best * 1e9)))" 2>/dev/null || echo 0)
  echo "copy rate (torch copy_): $CP TB/s" | tee -a "$OUT/card.txt"
  echo "== fused linear layers: differential vs the composition, timings"
  timeout 90 node .gpu/gemv-gpu.mjs --cases=200 --rows=1,2 2>&1 | strip | tee "$OUT/gemv.txt" | grep -E "seed|differential|layer|Error"
  echo "== serve checks"
  timeout 120 node .gpu/serve-gpu.mjs --quick 2>&1 | strip | tail -30 | tee "$OUT/serve-gpu.txt"
  echo "== the same with host sampling one step at a time and the append kernel (batch-1 answers must not change)"
  ZIPVL_DECODE_AHEAD=off ZIPVL_PAGED_SINK=off timeout 120 node .gpu/serve-gpu.mjs --quick 2>&1 | strip | tail -30 > "$OUT/serve-gpu-plain.txt"
  d1=$(grep -o "digest [0-9a-f]*" "$OUT/serve-gpu.txt"); d2=$(grep -o "digest [0-9a-f]*" "$OUT/serve-gpu-plain.txt")
  if [ -n "$d1" ] && [ "$d1" = "$d2" ]; then echo "batch-1 answers equal ($d1)"; else echo "FAIL: batch-1 answers differ ($d1 vs $d2)"; fi
  echo "== serve bench (CUDA graphs; batch 1 and the largest batch that fits; 128k ZipVL prefill at 36.7% and 20% kept)"
  timeout 330 node .gpu/serve-bench.mjs --lengths=2900,16000,32000 --steps=16 --max-batch=64 --no-eager --profile --copy-tbps=$CP --ratio-128k=0.367,0.2 2>&1 | strip | tee "$OUT/serve-bench.txt" | grep -v "^    zv_" | tail -40
  echo "== the same at batch 1 with composed linear layers (ZIPVL_GEMV=off: cuBLASLt + the model kernels)"
  ZIPVL_GEMV=off timeout 150 node .gpu/serve-bench.mjs --lengths=2900,16000,32000 --no-128k --steps=16 --max-batch=1 --no-eager --copy-tbps=$CP 2>&1 | strip | tee "$OUT/serve-bench-composed.txt" | grep "batch   1" ;;
wgsl)
  bash bench/wgsl-gpu.sh --quick 2>&1 | tail -50 ;;
*) echo "usage: bash bench/gpu-session.sh kernels|bench|model|serve|wgsl" >&2; exit 2 ;;
esac
