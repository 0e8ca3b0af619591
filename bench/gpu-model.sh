#!/usr/bin/env bash
# The LLaVA pipeline on a GPU host in one call (no Node, no node_modules, no network there): everything it needs
# travels in .gpu/ (carry [".gpu"]): node.xz (../shared/gpu/pack-node.sh), zipvl.mjs.xz, zipvl_native.node,
# model-gpu-check.mjs, llava-scale.mjs (node bench/bundle.mjs). Parts, each under its own timeout, each skipping
# with a message when its inputs are missing:
#   a  parity: a tiny random LLaVA-Next checkpoint from our writer, transformers' reference (bench/llava_parity.py,
#      f32 and bf16), then `zipvl parity` (dense and ZipVL at the paper's tau and at tau 1, which must equal dense) on
#      cuda and cpu: max abs/rel logit error, greedy agreement
#   b  the ModelOps GPU check (.gpu/model-gpu-check.mjs: every op and the small model, cuda vs cpu)
#   c  `zipvl run --backend cuda` on the tiny checkpoint, dense and ZipVL, bf16 and f32, timed (a warm-up run first);
#      with --full also `zipvl demo --size medium` (~2k prompt tokens) on cuda
#   d  the 13B-shaped decoder (.gpu/llava-scale.mjs, dense vs ZipVL 36.7%) and its transformers baseline
#      (bench/llava_scale_hf.py); --quick runs 8 layers at 2.9k tokens only
# Logs and JSON go under $OUT; the last thing printed is a summary table (also $OUT/summary.md).
# Usage, repo root:  bash bench/gpu-model.sh [--parts=abcd] [--quick] [--full] [--budget=SECONDS]
# The whole run is kept under --budget (default 530 s): each step's timeout is cut to what is left of it.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-/tmp/zipvl-gpu-model}
W=${ZV_WORK:-/tmp/zvgm}
parts=abcd; quick=0; full=0; budget=530
for a in "$@"; do
  case $a in
    --parts=*) parts=${a#--parts=} ;;
    --quick) quick=1 ;;
    --full) full=1 ;;
    --budget=*) budget=${a#--budget=} ;;
    *) echo "usage: bash bench/gpu-model.sh [--parts=abcd] [--quick] [--full] [--budget=SECONDS]" >&2; exit 2 ;;
  esac
done
mkdir -p "$OUT" "$W"
: > "$OUT/status.tsv"
T0=$(date +%s)
PROMPT="What is in the image?"
# Dry runs elsewhere: ZV_PARITY_BACKENDS="cpu", ZV_RUN_BACKEND=cpu ZV_RUN_DTYPES=f32 (defaults: the GPU host's).
SIZE=${PARITY_SIZE:-tiny}
PARITY_BACKENDS=${ZV_PARITY_BACKENDS:-cuda cpu}
RUN_BACKEND=${ZV_RUN_BACKEND:-cuda}
RUN_DTYPES=${ZV_RUN_DTYPES:-bf16 f32}

# status PART STEP STATUS DETAIL: one row of the final table.
status() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "${4:-}" >> "$OUT/status.tsv"; echo "-- [$1] $2: $3${4:+ ($4)}"; }
left() { echo $(( budget - ($(date +%s) - T0) )); }
# step PART NAME TIMEOUT LOG CMD...: runs CMD with stdout+stderr in LOG under min(TIMEOUT, what is left of the
# budget), records ok / FAILED / TIMEOUT with the wall time, prints the log's last lines when it did not pass.
# Sets $rc.
step() {
  local part=$1 name=$2 t=$3 log=$4; shift 4
  local l; l=$(left)
  if [ "$l" -lt 15 ]; then status "$part" "$name" SKIPPED "budget of ${budget}s spent"; rc=125; return; fi
  [ "$t" -gt "$l" ] && t=$l
  local s; s=$(date +%s)
  timeout -k 10 "$t" "$@" > "$log" 2>&1; rc=$?
  local d=$(( $(date +%s) - s ))
  case $rc in
    0) status "$part" "$name" ok "${d}s" ;;
    124|137) status "$part" "$name" TIMEOUT "after ${d}s (limit ${t}s); log ${log#$OUT/}"; brief "$log" ;;
    *) local why; why=$(grep -m1 -o 'ZV[0-9]\{4\}: .\{0,140\}' "$log")
       status "$part" "$name" "FAILED rc=$rc" "${d}s; ${why:-log ${log#$OUT/}}"; [ -n "$why" ] || brief "$log" ;;
  esac
}
# The last lines of a log without stack frames and Node's source excerpts.
brief() { grep -v '^ *at \|^ *[{}^]\|^Node\.js v\|^ *$' "$1" | tail -n 4 | cut -c1-300; }
has() { case $parts in *$1*) return 0 ;; *) return 1 ;; esac; }

echo "== setup (parts $parts, quick $quick, full $full, budget ${budget}s, OUT $OUT)"
# Node: this machine's binary packed by pack-node.sh; a local node of the same version does as well (dry runs).
NODE=
if command -v node > /dev/null && [ "$(node --version)" = "$(cat .gpu/node.version 2>/dev/null)" ]; then NODE=$(command -v node)
elif [ -s .gpu/node.xz ]; then xz -dc .gpu/node.xz > "$W/node" && chmod +x "$W/node" && NODE=$W/node
elif command -v node > /dev/null; then NODE=$(command -v node)
fi
Z=
if [ -z "$NODE" ]; then echo "no Node: .gpu/node.xz is missing (run ../shared/gpu/pack-node.sh and carry .gpu)"
elif [ -s .gpu/zipvl.mjs.xz ]; then xz -dc .gpu/zipvl.mjs.xz > "$W/zipvl.mjs" && Z="$NODE $W/zipvl.mjs"
elif [ -s .gpu/zipvl.mjs ]; then Z="$NODE .gpu/zipvl.mjs"
else echo "no bundled CLI: .gpu/zipvl.mjs.xz is missing (node bench/bundle.mjs)"
fi
export PATH=/usr/local/cuda/bin:$PATH ZIPVL_TEMPLATES=$ROOT/templates ZIPVL_CACHE_DIR=$W/cache PYTHONUNBUFFERED=1
[ -s .gpu/zipvl_native.node ] && export ZIPVL_NATIVE_ADDON=$ROOT/.gpu/zipvl_native.node
[ -n "$NODE" ] && echo "node $($NODE --version)"
if command -v nvidia-smi > /dev/null; then nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/card.txt"
else echo "no nvidia-smi: the cuda steps will report the coded no-driver error" | tee "$OUT/card.txt"; fi
PY=0
if python3 -c 'import torch, transformers, safetensors, PIL; print("python: torch", torch.__version__, "transformers", transformers.__version__, "cuda", torch.cuda.is_available())' 2> "$OUT/python.txt"; then PY=1
else echo "python: no torch/transformers/safetensors/Pillow here ($(tail -n 1 "$OUT/python.txt")): the transformers steps are skipped"; fi
[ -z "$Z" ] && status setup cli SKIPPED "no Node or no .gpu/zipvl.mjs.xz: every zipvl step is skipped"

# Writes a random LLaVA-Next checkpoint of size $SIZE (our writer; the cpu demo around it is a cheap side effect).
write_ckpt() { rm -rf "$2"; step "$1" "write $SIZE checkpoint $(basename "$2")" 60 "$OUT/write-$(basename "$2").txt" $Z demo --backend cpu --size "$SIZE" --out "$2" --max-new-tokens 0; }

if has a; then
  echo "== (a) parity with transformers"
  for dt in f32 bf16; do
    D=$W/parity-$dt
    if [ -z "$Z" ]; then status a "parity $dt" SKIPPED "no bundled CLI"; continue; fi
    write_ckpt a "$D"; [ $rc = 0 ] || continue
    if [ $PY = 0 ]; then status a "transformers reference $dt" SKIPPED "no torch/transformers"; continue; fi
    step a "transformers reference $dt" 240 "$OUT/llava_parity-$dt.txt" python3 bench/llava_parity.py --dir "$D" --out "$D/ref" --dtype $dt --new-tokens 16 --prompt "$PROMPT"
    [ $rc = 0 ] || continue
    grep -m1 "greedy" "$OUT/llava_parity-$dt.txt"; cp "$D/ref/ref.json" "$OUT/ref-$dt.json"
    for be in $PARITY_BACKENDS; do
      [ $be = cpu ] && [ $dt = bf16 ] && continue  # the cpu ops compute in f32 only
      dflag=(); [ $be = cuda ] && dflag=(--dtype $dt)
      # The paper's tau, then tau = 1 (every token kept: the sparse path must then give the dense logits).
      for tau in default 1; do
        tflag=(); sfx=; [ $tau = default ] || { tflag=(--tau $tau); sfx=-tau$tau; }
        step a "zipvl parity $dt on $be, tau $tau" 180 "$OUT/parity-$dt-$be$sfx.log" sh -c 'json=$1; shift; "$@" > "$json"' _ "$OUT/parity-$dt-$be$sfx.json" \
          $Z parity --model "$D" --ref "$D/ref/ref.safetensors" --ref-json "$D/ref/ref.json" --image "$D/ref/image.png" --prompt "$PROMPT" --backend $be "${dflag[@]}" "${tflag[@]}" --json
        [ $rc = 0 ] || break
      done
    done
  done
fi

if has b; then
  echo "== (b) ModelOps GPU check"
  if [ -z "$NODE" ] || [ ! -s .gpu/model-gpu-check.mjs ]; then status b model-gpu-check SKIPPED "no Node or no .gpu/model-gpu-check.mjs (node bench/bundle.mjs)"
  else
    q=(); [ $quick = 1 ] && q=(--quick)
    step b model-gpu-check 180 "$OUT/model-gpu-check.txt" $NODE .gpu/model-gpu-check.mjs "$OUT/model-gpu-check" "${q[@]}"
    grep -E '^(seed|==|FAIL)|passed|FAILED' "$OUT/model-gpu-check.txt" | head -n 20
  fi
fi

if has c; then
  echo "== (c) zipvl run on $RUN_BACKEND, timed"
  if [ -z "$Z" ]; then status c run SKIPPED "no bundled CLI"
  else
    D=$W/parity-f32
    [ -s "$D/config.json" ] || write_ckpt c "$D"
    IMG=$D/demo.png; [ -s "$D/ref/image.png" ] && IMG=$D/ref/image.png
    if [ -s "$D/config.json" ]; then
      for dt in $RUN_DTYPES; do
        step c "run warm-up $dt (compiles kernels)" 150 "$OUT/run-$dt-warmup.txt" $Z run --model "$D" --image "$IMG" --prompt "$PROMPT" --backend $RUN_BACKEND --dtype $dt --max-new-tokens 2
        [ $rc = 0 ] || continue
        for mode in dense zipvl; do
          mflag=(); [ $mode = dense ] && mflag=(--dense)
          step c "run $mode $dt" 90 "$OUT/run-$dt-$mode.log" sh -c 'json=$1; shift; "$@" > "$json"' _ "$OUT/run-$dt-$mode.json" \
            $Z run --model "$D" --image "$IMG" --prompt "$PROMPT" --backend $RUN_BACKEND --dtype $dt --max-new-tokens 32 "${mflag[@]}" --json
        done
      done
      if [ $full = 1 ]; then
        step c "demo medium bf16" 300 "$OUT/demo-medium.log" sh -c 'json=$1; shift; "$@" > "$json"' _ "$OUT/demo-medium.json" \
          $Z demo --backend cuda --size medium --dtype bf16 --weights-dtype bf16 --max-new-tokens 32 --out "$W/demo-medium" --json
      fi
    fi
  fi
fi

if has d; then
  echo "== (d) 13B-shaped decoder: zipvl cuda, then transformers"
  sflag=(); hflag=(); [ $quick = 1 ] && sflag=(--quick) && hflag=(--quick)
  if [ -z "$NODE" ] || [ ! -s .gpu/llava-scale.mjs ]; then status d llava-scale SKIPPED "no Node or no .gpu/llava-scale.mjs (node bench/bundle.mjs)"
  else
    step d llava-scale 300 "$OUT/llava-scale.txt" $NODE .gpu/llava-scale.mjs "$OUT/llava-scale" "${sflag[@]}"
    grep -E '^(device|weights|dense|zipvl|n [0-9])' "$OUT/llava-scale.txt" | head -n 12
  fi
  if [ ! -s bench/llava_scale_hf.py ]; then status d llava_scale_hf SKIPPED "no bench/llava_scale_hf.py"
  elif [ $PY = 0 ]; then status d llava_scale_hf SKIPPED "no torch/transformers"
  else
    step d llava_scale_hf 240 "$OUT/llava_scale_hf.txt" python3 bench/llava_scale_hf.py --out "$OUT/llava_scale_hf.json" "${hflag[@]}"
    grep -E '^\[' "$OUT/llava_scale_hf.txt" | head -n 8
  fi
fi

echo "== summary ($(( $(date +%s) - T0 ))s)"
if [ -n "$NODE" ]; then $NODE bench/gpu-model-summary.mjs "$OUT"; else column -t -s "$(printf '\t')" "$OUT/status.tsv"; fi
