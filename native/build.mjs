// Builds the zipvl_native addon (node-gyp) and the mock CUDA driver used by CPU-only tests.
// Run by package.json's "install" script, so it must NEVER fail `npm ci`: every problem becomes a warning and
// exit code 0; at run time src/runtime/native.ts reports a missing addon as ZV3001.
// Env: CUDA_HOME (headers only; default /usr/local/cuda), ZIPVL_SKIP_NATIVE=1 (skip everything),
//      ZIPVL_FORCE_CUDA_MIN=1 (compile against the vendored native/src/cuda_min.h even if cuda.h exists).
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const nativeDir = dirname(fileURLToPath(import.meta.url));
const root = resolve(nativeDir, "..");
const addonPath = join(nativeDir, "build", "Release", "zipvl_native.node");

function warn(msg) {
  console.warn(`[zipvl native] WARNING: ${msg}`);
}

function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: "utf8", maxBuffer: 64 << 20, timeout: 600_000, ...opts });
  const out = `${r.stdout ?? ""}${r.stderr ?? ""}`;
  return { ok: r.status === 0 && !r.error, out: r.error ? `${r.error.message}\n${out}` : out };
}

function tail(text, n = 30) {
  return text.trimEnd().split("\n").slice(-n).join("\n");
}

// node-gyp: the project's own (devDependency), else the one npm exports to install scripts.
function findNodeGyp() {
  const local = join(root, "node_modules", ".bin", "node-gyp");
  if (existsSync(local)) return [local];
  try {
    const req = createRequire(join(root, "package.json"));
    return [process.execPath, req.resolve("node-gyp/bin/node-gyp.js")];
  } catch {
    /* not installed locally */
  }
  const npmGyp = process.env.npm_config_node_gyp;
  if (npmGyp && existsSync(npmGyp)) return [process.execPath, npmGyp];
  return null;
}

// Offline machines cannot download Node headers: point node-gyp at the headers installed next to this node
// binary (Debian: /usr/include/node; nvm/tarballs: <prefix>/include/node). npm sets npm_config_nodedir itself.
function nodedirArgs() {
  if (process.env.npm_config_nodedir) return [];
  const prefix = resolve(dirname(process.execPath), "..");
  return existsSync(join(prefix, "include", "node", "node_api.h")) ? [`--nodedir=${prefix}`] : [];
}

function buildAddon() {
  const gyp = findNodeGyp();
  if (!gyp) return warn("node-gyp not found (install devDependencies); the CUDA runtime addon was NOT built.");
  const cudaHome = process.env.CUDA_HOME || "/usr/local/cuda";
  const haveCudaH = existsSync(join(cudaHome, "include", "cuda.h"));
  const forceMin = process.env.ZIPVL_FORCE_CUDA_MIN === "1" || !haveCudaH;
  const args = ["rebuild", `--directory=${nativeDir}`, "-j", "max", ...nodedirArgs()];
  if (forceMin) args.push("--force_cuda_min=1");
  const [cmd, ...pre] = gyp;
  const r = run(cmd, [...pre, ...args], { cwd: nativeDir });
  if (!r.ok || !existsSync(addonPath)) {
    warn(`building the CUDA runtime addon failed (needs python3, make and a C++17 compiler).\n${tail(r.out)}`);
    warn("zipvl still installs; GPU execution reports ZV3001 until `node native/build.mjs` succeeds.");
    return;
  }
  console.log(`[zipvl native] built ${addonPath} against ${forceMin ? "native/src/cuda_min.h" : `${cudaHome}/include/cuda.h`}`);
}

// The mock driver is only needed by tests; a failure here is reported but harmless.
function buildMock() {
  const src = join(nativeDir, "mock", "libcuda_mock.c");
  const out = join(nativeDir, "mock", "libcuda_mock.so");
  const cc = process.env.CC || "gcc";
  const r = run(cc, ["-shared", "-fPIC", "-O1", "-fvisibility=hidden", `-I${join(nativeDir, "src")}`, "-o", out, src, "-lm"]);
  if (!r.ok) return warn(`building the mock CUDA driver failed (tests that need it will be skipped):\n${tail(r.out)}`);
  console.log(`[zipvl native] built ${out}`);
  // The mock cuBLASLt (GEMMs on the mock's host-backed "device" memory).
  const lt = join(nativeDir, "mock", "libcublaslt_mock.so");
  const rl = run(cc, ["-shared", "-fPIC", "-O2", "-fvisibility=hidden", "-o", lt, join(nativeDir, "mock", "libcublaslt_mock.c"), "-lm"]);
  if (!rl.ok) return warn(`building the mock cuBLASLt failed (tests that need it will be skipped):\n${tail(rl.out)}`);
  console.log(`[zipvl native] built ${lt}`);
}

try {
  if (process.env.ZIPVL_SKIP_NATIVE === "1") {
    console.log("[zipvl native] ZIPVL_SKIP_NATIVE=1: skipping native builds");
  } else {
    mkdirSync(join(nativeDir, "mock"), { recursive: true });
    if (process.argv.includes("--clean")) rmSync(join(nativeDir, "build"), { recursive: true, force: true });
    buildAddon();
    buildMock();
  }
} catch (e) {
  warn(`unexpected error while building native code: ${e instanceof Error ? e.stack : String(e)}`);
}
process.exit(0);
