// Every environment variable zipvl reads, in one place (Triton's knobs module).
export const knobs = {
  /** Where compiled kernels are cached (content-keyed). */
  cacheDir: process.env.ZIPVL_CACHE_DIR ?? ".zipvl-cache",
  /** Path of the CUDA driver library (tests point it at the mock). */
  libcuda: process.env.ZIPVL_LIBCUDA,
  /** Set to 1 on a machine with a real GPU to run the GPU test suites. */
  realGpu: process.env.ZIPVL_REAL_GPU === "1",
  /** nvcc for ahead-of-time compilation. */
  nvcc: process.env.ZIPVL_NVCC ?? (process.env.CUDA_HOME ? `${process.env.CUDA_HOME}/bin/nvcc` : "/usr/local/cuda/bin/nvcc"),
  /** "nvrtc" compiles kernels just in time with NVRTC even where nvcc exists (default: nvcc when present). */
  jit: process.env.ZIPVL_JIT === "nvrtc" ? "nvrtc" : "auto",
  /** Root of the templates/ folder (bundled runners live elsewhere). */
  templates: process.env.ZIPVL_TEMPLATES,
  /** Number of fast-check runs for property tests (CI keeps the default). */
  fcRuns: Number(process.env.ZIPVL_FC_RUNS ?? "0") || undefined,
  /** Folder of the per-GPU tuning records (default: generated/tuning of the checkout). */
  tuningDir: process.env.ZIPVL_TUNING_DIR,
  /** "off" makes config selection ignore tuning records (baselines, bisecting a tuned config). */
  tuning: process.env.ZIPVL_TUNING === "off" ? "off" : "on",
  /** "off" sends decode's small-batch linear layers to cuBLASLt instead of the fused zv_gemv kernels (baselines). */
  gemv: process.env.ZIPVL_GEMV === "off" ? "off" : "on",
  /** "off" launches the fused zv_gemv kernels without programmatic dependent launch (A/B of the overlap). */
  pdl: process.env.ZIPVL_PDL === "off" ? "off" : "on",
  /** Weight-ring stages of the one-row fused kernels: 4, 8 or 16 (default 4: fastest on the H100; benchmarks). */
  gemvRing: (["4", "8", "16"].includes(process.env.ZIPVL_GEMV_RING ?? "") ? Number(process.env.ZIPVL_GEMV_RING) : 4) as 4 | 8 | 16,
  /** Most waves of CTAs (the split entry's occupancy) the paged decode attention splits a batch's caches into
   *  (default 4; benchmarks). */
  pagedWaves: Math.max(1, Math.floor(Number(process.env.ZIPVL_PAGED_WAVES ?? "4")) || 4),
  /** Waves of CTAs of the paged attention for caches shorter than one wave of such slices (default 1; benchmarks). */
  pagedShortWaves: Math.max(0.25, Number(process.env.ZIPVL_PAGED_SHORT_WAVES ?? "1") || 1),
  /** Tokens of the longest cache a paged-attention split aims at: k waves, k = length / (tokens * splits a wave)
   *  (default 256). */
  pagedSplitTokens: Math.max(64, Math.floor(Number(process.env.ZIPVL_PAGED_SPLIT_TOKENS ?? "256")) || 256),
  /** Force the one-row fused kernels' warps per unit (split K): 1, 2, or "gated" (2 for the gated MLP launch only);
   *  benchmarks; default: per launch. */
  gemvSplitK: process.env.ZIPVL_GEMV_SPLITK === "1" ? (1 as const) : process.env.ZIPVL_GEMV_SPLITK === "2" ? (2 as const) : process.env.ZIPVL_GEMV_SPLITK === "gated" ? ("gated" as const) : undefined,
  /** "off": decode steps append the new K/V with the append kernel even where the fused q/k/v launch could write
   *  them into the pages itself (A/B of the fold). */
  pagedSink: process.env.ZIPVL_PAGED_SINK === "off" ? "off" : "on",
  /** "off": a decode step's paged split reads no key before its PDL wait (A/B of issuing the first keys while the
   *  q/k/v launch drains). */
  pagedEarly: process.env.ZIPVL_PAGED_EARLY === "off" ? "off" : "on",
  /** "off": serving decode samples on the host from the logits, one step at a time, instead of greedy ids on the
   *  device with the next step in flight (src/serve/ahead.ts; A/B of the overlap). */
  decodeAhead: process.env.ZIPVL_DECODE_AHEAD === "off" ? "off" : "on",
  /** "off" merges the paged decode's splits in a second launch instead of in the split kernel's last CTA. */
  pagedMerge: process.env.ZIPVL_PAGED_MERGE === "off" ? "off" : "on",
  /** Most elements of x the fused kernels stage at a time (smaller chunks leave shared memory to the weight rings;
   *  benchmarks; default: up to 32 KiB). */
  gemvChunk: Math.max(0, Math.floor(Number(process.env.ZIPVL_GEMV_CHUNK ?? "0")) || 0),
  /** Most token rows the fused zv_gemv kernels take (1..8; default 1: on the H100 cuBLASLt's tensor cores win from
   *  2 rows, docs/PERFORMANCE.md). */
  gemvRows: Math.min(8, Math.max(1, Math.floor(Number(process.env.ZIPVL_GEMV_ROWS ?? "1")) || 1)),
  /** How one-row fused launches get x: "all" (default) through the weight ring next to the weight rows, with the
   *  norm weight too and the RMS scale applied at use; "on" only launches without a norm (o_proj, down_proj,
   *  lm_head), the others stage x in shared memory; "off" stages x everywhere. */
  gemvDirect: process.env.ZIPVL_GEMV_DIRECT === "off" ? "off" : process.env.ZIPVL_GEMV_DIRECT === "on" ? "on" : "all",
  /** Each warp of the fused kernels starts its rows at its own stage of K (default; "0" turns it off). */
  gemvRotate: process.env.ZIPVL_GEMV_ROTATE !== "0",
  /** CTAs per SM the one-row fused kernels' launch bounds ask for (3..8, default 5; caps their registers; benchmarks). */
  gemvMinBlocks: Math.min(8, Math.max(3, Math.floor(Number(process.env.ZIPVL_GEMV_MINBLOCKS ?? "5")) || 5)),
} as const;

