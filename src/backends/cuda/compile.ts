// Kernel compilation with a content-keyed cache: ahead of time with nvcc (cubins for sm_90a / sm_80, plus PTX),
// just in time with NVRTC where libnvrtc exists. A warm start loads the cached cubin without compiling.
// Key = sha256(rendered source, template+library hash, toolchain version, arch, options).
import { execFileSync, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fail } from "../../diagnostics/diagnostic.ts";
import { knobs } from "../../knobs.ts";
import { INCLUDE_DIR, templateHash, type KernelSource } from "./render.ts";

export type Arch = 80 | 90;
export interface PtxasReport {
  readonly kernel: string;
  readonly registers: number;
  readonly spillStores: number;
  readonly spillLoads: number;
  readonly stackBytes: number;
  readonly smemBytes: number;
}
export interface CompiledKernel {
  readonly key: string;
  readonly cubin: Uint8Array;
  readonly compiler: "nvcc" | "nvrtc";
  readonly cached: boolean;
  readonly ms: number;
  readonly reports: readonly PtxasReport[];
}

const gencode = (arch: Arch): string => (arch === 90 ? "arch=compute_90a,code=sm_90a" : "arch=compute_80,code=sm_80");
const OPTS = ["-std=c++17", "-O3", "--use_fast_math"] as const;

let nvccVersionMemo: string | null | undefined;
export function nvccVersion(): string | null {
  if (nvccVersionMemo === undefined) {
    try {
      const out = execFileSync(knobs.nvcc, ["--version"], { encoding: "utf8" });
      nvccVersionMemo = /release [\d.]+, V([\d.]+)/.exec(out)?.[1] ?? out.trim().split("\n").pop() ?? "unknown";
    } catch {
      nvccVersionMemo = null;
    }
  }
  return nvccVersionMemo;
}

export function parsePtxas(log: string): PtxasReport[] {
  const reports: PtxasReport[] = [];
  let kernel = "";
  let stack = 0;
  let stores = 0;
  let loads = 0;
  for (const line of log.split("\n")) {
    const fn = /Compiling entry function '(\w+)'|Function properties for (\w+)/.exec(line);
    if (fn) kernel = (fn[1] ?? fn[2])!;
    const sp = /(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads/.exec(line);
    if (sp) [stack, stores, loads] = [Number(sp[1]), Number(sp[2]), Number(sp[3])];
    const used = /Used (\d+) registers(?:.*?(\d+) bytes smem)?/.exec(line);
    if (used) reports.push({ kernel, registers: Number(used[1]), spillStores: stores, spillLoads: loads, stackBytes: stack, smemBytes: Number(used[2] ?? 0) });
  }
  return reports;
}

function cacheKey(k: KernelSource, arch: Arch, toolchain: string): string {
  return createHash("sha256").update(k.source).update(templateHash()).update(toolchain).update(String(arch)).update(OPTS.join(" ")).digest("hex").slice(0, 24);
}

/** The flags every nvcc invocation uses (tests that compile in parallel use them too). */
export function nvccFlags(arch: Arch): string[] {
  return [...OPTS, `-gencode=${gencode(arch)}`, "-I", INCLUDE_DIR];
}

/** nvcc: a cubin for one arch (and PTX when asked), with ptxas's register/spill report. */
export function nvccCompile(k: KernelSource, arch: Arch, opts: { ptx?: boolean } = {}): { cubin: Uint8Array; ptx?: string; reports: PtxasReport[] } {
  if (!nvccVersion()) fail("ZV4001", ["cuda (nvcc)", `nvcc not found at ${knobs.nvcc}; set ZIPVL_NVCC or CUDA_HOME`]);
  const dir = mkdtempSync(join(tmpdir(), "zipvl-nvcc-"));
  try {
    const src = join(dir, `${k.name}.cu`);
    writeFileSync(src, k.source);
    const common = nvccFlags(arch);
    const run = (args: string[]): string => {
      const r = spawnSync(knobs.nvcc, [...common, ...args, src], { encoding: "utf8" });
      if (r.status !== 0) fail("ZV4001", ["cuda (nvcc)", `compiling ${k.name} for sm_${arch}${arch === 90 ? "a" : ""} failed:\n${r.stderr}${r.stdout}`]);
      return `${r.stdout}\n${r.stderr}`;
    };
    const log = run(["-cubin", "-Xptxas", "-v", "-o", join(dir, "k.cubin")]);
    const out: { cubin: Uint8Array; ptx?: string; reports: PtxasReport[] } = { cubin: new Uint8Array(readFileSync(join(dir, "k.cubin"))), reports: parsePtxas(log) };
    if (opts.ptx) {
      run(["-ptx", "-o", join(dir, "k.ptx")]);
      out.ptx = readFileSync(join(dir, "k.ptx"), "utf8");
    }
    return out;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** NVRTC (JIT): the device library travels as in-memory headers. */
function nvrtcBuild(k: KernelSource, arch: Arch, compile: NvrtcFn): Uint8Array {
  const headers: Record<string, string> = {};
  for (const f of readdirSync(INCLUDE_DIR)) if (f.endsWith(".cuh")) headers[f] = readFileSync(join(INCLUDE_DIR, f), "utf8");
  const cudaInc = `${process.env.CUDA_HOME ?? "/usr/local/cuda"}/include`;
  const options = [`-arch=sm_${arch}${arch === 90 ? "a" : ""}`, "-std=c++17", "--use_fast_math", "-default-device", ...(existsSync(cudaInc) ? [`-I${cudaInc}`] : [])];
  return compile(k.source, { name: `${k.name}.cu`, options, headers }).image;
}
export type NvrtcFn = (src: string, o: { name: string; options: readonly string[]; headers: Record<string, string> }) => { image: Uint8Array; log: string };

/** Cached compile for the running GPU: nvcc when present (the GPU host has it), else NVRTC. */
export function compileKernel(k: KernelSource, arch: Arch, nvrtc?: { version: string; compile: NvrtcFn }): CompiledKernel {
  const t0 = performance.now();
  const nv = knobs.jit === "nvrtc" ? null : nvccVersion();
  const toolchain = nv ? `nvcc ${nv}` : nvrtc ? `nvrtc ${nvrtc.version}` : fail("ZV4001", ["cuda", "neither nvcc nor NVRTC is available to compile kernels"]);
  const key = cacheKey(k, arch, toolchain);
  const dir = join(knobs.cacheDir, "cuda");
  const path = join(dir, `${key}.cubin`);
  if (existsSync(path)) return { key, cubin: new Uint8Array(readFileSync(path)), compiler: nv ? "nvcc" : "nvrtc", cached: true, ms: performance.now() - t0, reports: [] };
  let cubin: Uint8Array;
  let reports: PtxasReport[] = [];
  if (nv) ({ cubin, reports } = nvccCompile(k, arch));
  else cubin = nvrtcBuild(k, arch, nvrtc!.compile);
  mkdirSync(dir, { recursive: true });
  writeFileSync(path, cubin);
  return { key, cubin, compiler: nv ? "nvcc" : "nvrtc", cached: false, ms: performance.now() - t0, reports };
}


/** Fills the cache for many kernels at once with parallel nvcc runs (a model's or a test run's whole set). */
export async function precompile(jobs: readonly { k: KernelSource; arch: Arch }[], concurrency: number): Promise<number> {
  const nv = nvccVersion();
  if (!nv) return 0;
  const { execFile } = await import("node:child_process");
  const run = (args: string[]): Promise<void> => new Promise((res, rej) => execFile(knobs.nvcc, args, { maxBuffer: 1 << 24 }, (e) => (e ? rej(e) : res())));
  const dir = join(knobs.cacheDir, "cuda");
  mkdirSync(dir, { recursive: true });
  const todo = [...new Map(jobs.map((j) => [cacheKey(j.k, j.arch, `nvcc ${nv}`), j])).entries()].filter(([key]) => !existsSync(join(dir, `${key}.cubin`)));
  const tmp = mkdtempSync(join(tmpdir(), "zipvl-pre-"));
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < todo.length) {
      const [key, j] = todo[next++]!;
      const src = join(tmp, `${key}.cu`);
      writeFileSync(src, j.k.source);
      await run([...nvccFlags(j.arch), "-cubin", "-o", join(dir, `${key}.cubin`), src]);
    }
  };
  try {
    await Promise.all(Array.from({ length: Math.max(1, concurrency) }, worker));
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  return todo.length;
}
