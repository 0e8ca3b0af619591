#!/bin/bash
# Install a Vulkan software driver for Dawn (npm `webgpu`) on Debian 12, idempotently, and print the env to export.
#
# Why backports: Debian 12's own lavapipe (Mesa 22) is rejected by Dawn; Mesa 25 lavapipe from bookworm-backports
# works, offers shader-f16 and is 4-6x faster than SwiftShader. Fallback: SwiftShader shipped inside Debian's
# `chromium` package (no shader-f16, subgroup size 4).
# Usage: sudo .ci/install-vulkan.sh [lavapipe|swiftshader]   (default: lavapipe, falling back to swiftshader)
# Then:  eval "$(.ci/install-vulkan.sh --print-env)"
set -euo pipefail

want=${1:-lavapipe}
# Mesa 25 names the file lvp_icd.json; older Mesa used lvp_icd.<arch>.json. Resolved after installing.
find_lvp_icd() { ls /usr/share/vulkan/icd.d/lvp_icd.json /usr/share/vulkan/icd.d/lvp_icd.x86_64.json 2>/dev/null | head -n1; }
lvp_icd=$(find_lvp_icd || true)
ss_icd=/usr/lib/chromium/vk_swiftshader_icd.json

print_env() {
  local icd=$1
  echo "export VK_ICD_FILENAMES=$icd"
  echo "export VK_DRIVER_FILES=$icd"
  # A private runtime dir silences Mesa/XDG warnings on headless machines.
  echo "export XDG_RUNTIME_DIR=\${XDG_RUNTIME_DIR:-/tmp/xdg-\$(id -u)}; mkdir -p -m 700 \"\$XDG_RUNTIME_DIR\""
}

# Mesa >= 24 is what Dawn accepts; Debian 12 main ships 22.3.
mesa_ok() {
  local v
  v=$(dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null || true)
  lvp_icd=$(find_lvp_icd || true)
  [[ -n "$v" && -n "$lvp_icd" ]] && dpkg --compare-versions "$v" ge 24
}

if [[ $want == --print-env ]]; then
  if mesa_ok; then print_env $lvp_icd; elif [[ -f $ss_icd ]]; then print_env $ss_icd;
  else echo "echo 'no Vulkan software driver installed: run .ci/install-vulkan.sh' >&2"; exit 1; fi
  exit 0
fi

as_root() { if [[ $(id -u) == 0 ]]; then "$@"; else sudo "$@"; fi; }
export DEBIAN_FRONTEND=noninteractive

add_backports() {
  # Both deb822 (*.sources) and one-line (*.list) formats count as "already present".
  if grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then return 0; fi
  as_root tee /etc/apt/sources.list.d/bookworm-backports.sources >/dev/null <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
}

install_lavapipe() {
  mesa_ok && return 0
  add_backports
  as_root apt-get update -qq
  as_root apt-get install -y -qq --no-install-recommends -t bookworm-backports mesa-vulkan-drivers libvulkan1
  mesa_ok
}

install_swiftshader() {
  [[ -f $ss_icd ]] && return 0
  as_root apt-get update -qq
  as_root apt-get install -y -qq --no-install-recommends libvulkan1 chromium
  [[ -f $ss_icd ]]
}

icd=""
if [[ $want == lavapipe ]] && install_lavapipe; then
  icd=$lvp_icd
elif install_swiftshader; then
  icd=$ss_icd
else
  echo "install-vulkan: neither Mesa lavapipe (backports) nor SwiftShader (chromium) could be installed" >&2
  exit 1
fi
echo "# Vulkan software driver ready; export:" >&2
print_env "$icd"
