#!/usr/bin/env bash
# The WGSL session on the GPU host (or locally on a software Vulkan driver): unpack Node, Dawn (dawn.node) and the
# Vulkan loader from .gpu, point the loader at the NVIDIA ICD, then run the WGSL runner (bench/wgsl-check.ts) twice: with Dawn's
# default robustness (properties + benchmarks + the CUDA path on the same shapes) and with
# enable-dawn-features=disable_robustness (benchmarks only). Results: $OUT/wgsl-check-*.json and $OUT/wgsl-*.txt.
# Needs .gpu/ (carry it): node.xz (shared/gpu/pack-node.sh), then `node bench/bundle.mjs` (wgsl-check.mjs.xz,
# dawn.node.xz, zipvl_native.node and, after shared/gpu/pack-vulkan.sh, libvulkan1_*.deb).
# Usage: bash bench/wgsl-gpu.sh [--quick] [--no-cuda]     (env ICD=/path/to/icd.json overrides the ICD search)
set -uo pipefail
OUT=${OUT:-/tmp/zipvl-out}; mkdir -p "$OUT"
args=(); for a in "$@"; do args+=("$a"); done
work=/tmp/zv-wgsl; mkdir -p "$work/vk"
if command -v node >/dev/null && [ "$(node --version)" = "$(cat .gpu/node.version 2>/dev/null)" ]; then NODE=node
else xz -dc .gpu/node.xz > "$work/node" && chmod +x "$work/node" && NODE=$work/node; fi
xz -dc .gpu/dawn.node.xz > "$work/dawn.node" && export ZIPVL_DAWN_NODE=$work/dawn.node
xz -dc .gpu/wgsl-check.mjs.xz > "$work/wgsl-check.mjs" || exit 1
export ZIPVL_TEMPLATES=$PWD/templates ZIPVL_NATIVE_ADDON=$PWD/.gpu/zipvl_native.node ZIPVL_CACHE_DIR=/tmp/zvcache
export PATH=/usr/local/cuda/bin:$PATH XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-$work/xdg}; mkdir -p -m 700 "$XDG_RUNTIME_DIR"

# The Vulkan loader and the GL dispatch library NVIDIA's ICD (libGLX_nvidia.so.0) needs: the system's if present,
# else the debs packed in .gpu (extracted into /tmp, not installed). With the loader alone the H200 host said
# "Could not get 'vkCreateInstance' via 'vk_icdGetInstanceProcAddr' for ICD libGLX_nvidia.so.0".
if ! ldconfig -p 2>/dev/null | grep -q 'libvulkan.so.1 ' || ! ldconfig -p 2>/dev/null | grep -q 'libGLdispatch.so.0 '; then
  debs=$(ls .gpu/*.deb .gl/*.deb 2>/dev/null)
  if [ -n "$debs" ]; then for deb in $debs; do dpkg -x "$deb" "$work/vk"; done
    export LD_LIBRARY_PATH=$work/vk/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  else echo "no libvulkan.so.1/libGLdispatch.so.0 on this host and no debs in .gpu (run shared/gpu/pack-vulkan.sh, then node bench/bundle.mjs)"; fi
fi
# The ICD: NVIDIA's JSON where the driver installed one (seen at /usr/local/nvidia/share/vulkan/icd.d on the GPU
# host); else one written here for libGLX_nvidia.so.0 (the NVIDIA Vulkan ICD lives in that library); else, with no
# NVIDIA driver (this CI machine), the software driver from .ci/install-vulkan.sh.
if [ -z "${ICD:-}" ]; then
  for f in /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json /usr/share/vulkan/icd.d/nvidia_icd.json \
           /etc/vulkan/icd.d/nvidia_icd.json /usr/local/share/vulkan/icd.d/nvidia_icd.json; do
    [ -f "$f" ] && { ICD=$f; break; }
  done
fi
if [ -z "${ICD:-}" ] && ldconfig -p 2>/dev/null | grep -q libGLX_nvidia.so.0; then
  ICD=$work/nvidia_icd.json
  printf '{"file_format_version":"1.0.1","ICD":{"library_path":"libGLX_nvidia.so.0","api_version":"1.3.0"}}\n' > "$ICD"
fi
if [ -z "${ICD:-}" ] && [ -x .ci/install-vulkan.sh ]; then eval "$(.ci/install-vulkan.sh --print-env)"; ICD=$VK_ICD_FILENAMES; fi
export VK_ICD_FILENAMES=$ICD VK_DRIVER_FILES=$ICD
echo "node $($NODE --version), Vulkan ICD $ICD" | tee "$OUT/wgsl-env.txt"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee -a "$OUT/wgsl-env.txt"

echo "== WGSL: properties, benchmarks, CUDA on the same shapes (Dawn defaults)"
timeout 380 "$NODE" "$work/wgsl-check.mjs" "$OUT" --label=robust "${args[@]}" 2>&1 | grep -v '^Warning: maxDynamic' | tee "$OUT/wgsl-robust.txt" | tail -60
rc=${PIPESTATUS[0]}
echo "== WGSL benchmarks with enable-dawn-features=disable_robustness"
timeout 140 "$NODE" "$work/wgsl-check.mjs" "$OUT" --label=no-robustness --bench-only --no-cuda \
  --dawn-flags=enable-dawn-features=disable_robustness "${args[@]}" 2>&1 | grep -v '^Warning: maxDynamic' | tee "$OUT/wgsl-no-robustness.txt" | tail -12
exit "$rc"
