// The keys tuning records are stored under: what must be equal for a measured config to still be the best one.
import { createHash } from "node:crypto";
import { readFileSync, readdirSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { nvccVersion } from "../backends/cuda/compile.ts";
import { templateHash } from "../backends/cuda/render.ts";
import { knobs } from "../knobs.ts";
import type { DeviceInfo } from "../runtime/native.ts";
import type { ZvAdapterInfo } from "../runtime/webgpu.ts";
import type { RecordKey } from "./records.ts";

/** The compiler kernels are built with (mirrors compileKernel: nvcc unless ZIPVL_JIT=nvrtc or nvcc is missing). */
export function cudaToolchain(nvrtcVersion: () => readonly number[]): string {
  const nv = knobs.jit === "nvrtc" ? null : nvccVersion();
  if (nv) return `nvcc ${nv}`;
  try {
    return `nvrtc ${nvrtcVersion().join(".")}`;
  } catch {
    return "none";
  }
}

export function cudaKey(info: Pick<DeviceInfo, "name" | "computeCapability" | "driverVersion">, toolchain: string): RecordKey {
  return { backend: "cuda", device: info.name, cc: info.computeCapability.join("."), driver: String(info.driverVersion), toolchain, library: templateHash() };
}

const WGSL_DIR = (): string => (knobs.templates ? join(knobs.templates, "wgsl") : new URL("../../templates/wgsl/", import.meta.url).pathname);
/** Hash of the WGSL templates and their library (templates/wgsl, templates/wgsl/lib). */
export function wgslLibraryHash(dir = WGSL_DIR()): string {
  const h = createHash("sha256");
  for (const sub of [dir, join(dir, "lib")]) {
    for (const f of readdirSync(sub).sort()) if (/\.(hbs|wgsl)$/.test(f)) h.update(f).update(readFileSync(join(sub, f)));
  }
  return h.digest("hex").slice(0, 16);
}

let dawnVersion: string | undefined;
function webgpuPackageVersion(): string {
  if (dawnVersion === undefined) {
    try {
      dawnVersion = String((createRequire(import.meta.url)("webgpu/package.json") as { version: string }).version);
    } catch {
      dawnVersion = "unknown";
    }
  }
  return dawnVersion;
}

export function webgpuKey(info: Pick<ZvAdapterInfo, "vendor" | "architecture" | "device" | "description">): RecordKey {
  const device = [info.vendor, info.architecture, info.device, info.description].filter((x) => x).join(" ") || "unknown adapter";
  return { backend: "webgpu", device, cc: "", driver: `webgpu ${webgpuPackageVersion()}`, toolchain: "wgsl", library: wgslLibraryHash() };
}
