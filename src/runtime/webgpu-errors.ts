// Coded errors of the WebGPU runtime. Codes are stable (tests and users match on them, never on message text).
export type WebGpuErrorCode =
  | "ZV3101" // the optional `webgpu` npm package (Dawn) is not installed or failed to load
  | "ZV3102" // no adapter: no Vulkan driver visible to Dawn
  | "ZV3103" // device lost, validation error, or WGSL compile error (message carries the compiler output)
  | "ZV3104"; // a request exceeds the adapter's limits (buffer size, storage buffers per stage, workgroup size)

export class WebGpuError extends Error {
  readonly code: WebGpuErrorCode;
  constructor(code: WebGpuErrorCode, message: string, options?: { cause?: unknown }) {
    super(`${code}: ${message}`, options);
    this.name = "WebGpuError";
    this.code = code;
  }
}

/** Text for ZV3102, naming the drivers that are known to work with Dawn on Debian 12 (see .ci/install-vulkan.sh). */
export const NO_ADAPTER_HINT =
  "no WebGPU adapter found. Dawn needs a Vulkan driver: on Debian 12 run `.ci/install-vulkan.sh` (Mesa 25 lavapipe " +
  "from bookworm-backports: `apt-get install -t bookworm-backports mesa-vulkan-drivers libvulkan1`, then " +
  "VK_DRIVER_FILES=/usr/share/vulkan/icd.d/lvp_icd.json), or SwiftShader from `apt-get install libvulkan1 chromium` " +
  "(VK_DRIVER_FILES=/usr/lib/chromium/vk_swiftshader_icd.json). Debian 12's own Mesa 22 lavapipe is rejected by Dawn. " +
  "On an NVIDIA host the Vulkan loader (libvulkan1) and nvidia_icd.json must be present.";
