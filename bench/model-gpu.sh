#!/usr/bin/env bash
# The LLaVA model on a GPU host: `zipvl demo` on CUDA (small, and medium with ~1.5k prompt tokens), and parity with
# transformers (bench/llava_parity.py, f32 and bf16) for our CUDA and CPU runtimes. Needs .gpu/ (carry it):
# node.xz (../shared/gpu/pack-node.sh), zipvl-model.mjs.xz and zipvl_native.node (node bench/model-bundle.mjs).
# Usage on the GPU host, from the repo root: bash bench/model-gpu.sh [--quick]   (results under $OUT)
set -uo pipefail
OUT=${OUT:-/tmp/zipvl-out}; mkdir -p "$OUT"
quick=0; for a in "$@"; do [ "$a" = --quick ] && quick=1; done
xz -dc .gpu/node.xz > /tmp/node && chmod +x /tmp/node && export PATH=/tmp:/usr/local/cuda/bin:$PATH
xz -dc .gpu/zipvl-model.mjs.xz > /tmp/zipvl-model.mjs
export ZIPVL_TEMPLATES=$PWD/templates ZIPVL_NATIVE_ADDON=$PWD/.gpu/zipvl_native.node ZIPVL_CACHE_DIR=/tmp/zvcache
Z="node /tmp/zipvl-model.mjs"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/card.txt"
PROMPT="What is in the image?"

echo "== demo small, cuda bf16"
timeout 300 $Z demo --backend cuda --out /tmp/demo-small 2>&1 | tee "$OUT/demo-small.txt" | grep -v "^    at "
echo "== demo small, cuda f32"
timeout 300 $Z demo --backend cuda --dtype f32 --out /tmp/demo-small-f32 2>&1 | tee "$OUT/demo-small-f32.txt" | grep -v "^    at "
if [ $quick = 0 ]; then
  echo "== demo medium, cuda bf16 (writes a 100M-parameter checkpoint first)"
  timeout 500 $Z demo --backend cuda --size medium --dtype bf16 --weights-dtype bf16 --max-new-tokens 32 --out /tmp/demo-medium 2>&1 | tee "$OUT/demo-medium.txt" | grep -v "^    at "
fi

for dt in f32 bf16; do
  D=/tmp/parity-$dt; rm -rf "$D"
  echo "== parity $dt: our checkpoint files, transformers' weights and reference"
  # Our writer makes the tokenizer/processor/config files (the demo run itself is a cheap side effect).
  timeout 120 $Z demo --backend cpu --out "$D" --max-new-tokens 1 > /dev/null 2>&1
  PYTHONUNBUFFERED=1 timeout 300 python3 bench/llava_parity.py --dir "$D" --out "$D/ref" --dtype $dt --new-tokens 16 --prompt "$PROMPT" 2>&1 | tail -3
  for be in cuda cpu; do
    [ $be = cpu ] && [ $dt = bf16 ] && continue  # the cpu ops compute in f32 only
    echo "-- zipvl parity on $be ($dt)"
    timeout 300 $Z parity --model "$D" --ref "$D/ref/ref.safetensors" --ref-json "$D/ref/ref.json" \
      --image "$D/ref/image.png" --prompt "$PROMPT" --backend $be --dtype $dt 2>&1 | tee "$OUT/parity-$dt-$be.txt" | grep -v "^    at "
  done
done
