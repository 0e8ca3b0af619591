// One test (at least) per diagnostic code of src/diagnostics/codes.ts. Every mistake a user can make is reported as
// `path:line:col - error ZVnnnn: message` (program files) or `error ZVnnnn: message` (everything else), exit code 1,
// never with a stack trace.
//
// Program-file codes (ZV1002..ZV1210) are driven by test/programs/bad/*.ts: each file's first line reads
// `// expect: ZVnnnn at LINE:COL`, the exact place the diagnostic must point at, and the test runs `zipvl check` on it.
// The remaining codes are triggered through the CLI (`main(argv, out, err)`) or the module that owns them.
// The last test checks that every code in the table was asserted by some test here (runtime codes ZV30xx/ZV31xx
// are tested with the runtimes).
import { knobs } from "../src/knobs.ts";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { renderKernels } from "../src/backends/cuda/render.ts";
import { main } from "../src/cli/main.ts";
import { CODES, type Code } from "../src/diagnostics/codes.ts";
import { ZipvlError } from "../src/diagnostics/diagnostic.ts";
import { compileFile, compileSource } from "../src/driver.ts";
import type { DType } from "../src/io/dtype.ts";
import { writeSafetensors } from "../src/io/safetensors.ts";
import { makeTensor, type Tensor } from "../src/io/tensor.ts";
import { parseProgram } from "../src/ir/parse.ts";
import { printProgram } from "../src/ir/print.ts";
import { verifyProgram } from "../src/ir/verify.ts";
import { runPasses } from "../src/passes/index.ts";

const root = join(import.meta.dirname, "..");
const BAD = join(import.meta.dirname, "programs", "bad");
const ZIPVL = join(root, "dsl", "zipvl.ts");
const DENSE = join(root, "dsl", "variants", "dense.ts");
const MOCK_DRIVER = join(root, "native", "mock", "libcuda_mock.so");
const ADDON = join(root, "native", "build", "Release", "zipvl_native.node");
const tmp = mkdtempSync(join(tmpdir(), "zipvl-diag-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** Codes some test below has asserted (filled as the tests run; checked by the last test). */
const seen = new Set<string>();

interface Run {
  readonly rc: number;
  readonly out: string;
  readonly err: string;
}

async function cli(...argv: string[]): Promise<Run> {
  const out: string[] = [];
  const err: string[] = [];
  const rc = await main(argv, (s) => out.push(s), (s) => err.push(s));
  return { rc, out: out.join("\n"), err: err.join("\n") };
}

const escape = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

/** A user error: exit 1, stderr starts with `[where - ]error CODE: `, no stack trace, no internal error. */
function expectUserError(r: Run, code: Code, where?: string): void {
  const shown = `exit ${r.rc}\nstderr:\n${r.err}\nstdout:\n${r.out}`;
  expect(r.err, shown).not.toContain("    at ");
  expect(r.err, shown).not.toMatch(/internal error/);
  expect(r.rc, shown).toBe(1);
  expect(r.err, shown).toMatch(new RegExp(`^${where ? `${escape(where)} - ` : ""}error ${code}: \\S`));
  seen.add(code);
}

/** A ZipvlError thrown by a library call (IR parser, verifier). */
function expectThrows(f: () => unknown, code: Code, message: RegExp): void {
  let err: unknown;
  try {
    f();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(ZipvlError);
  expect((err as ZipvlError).code).toBe(code);
  expect((err as ZipvlError).message).toMatch(message);
  expect((err as ZipvlError).message).toMatch(new RegExp(`^error ${code}: `));
  seen.add(code);
}

// ---------------------------------------------------------------------------------------------------------------
// Program files: test/programs/bad/*.ts

const HEADER = /^\/\/ expect: (ZV\d{4}) at (\d+):(\d+)$/;
const badPrograms = readdirSync(BAD).filter((f) => f.endsWith(".ts")).sort();
const headerOf = (name: string): { code: Code; line: number; col: number } => {
  const m = HEADER.exec(readFileSync(join(BAD, name), "utf8").split("\n")[0]!.trimEnd());
  if (!m) throw new Error(`${name}: the first line must be \`// expect: ZVnnnn at LINE:COL\``);
  expect(Object.keys(CODES), `${name} names an unknown code`).toContain(m[1]);
  return { code: m[1] as Code, line: Number(m[2]), col: Number(m[3]) };
};

describe("program files point at the mistake (test/programs/bad)", () => {
  it.each(badPrograms)("%s", async (name) => {
    const { code, line, col } = headerOf(name);
    const file = join(BAD, name);
    const r = await cli("check", file);
    expectUserError(r, code, `${file}:${line}:${col}`);
    expect(r.out).toBe("");
  });

  it("has one bad program for every program-file code ZV1002..ZV1210", () => {
    const have = new Set(badPrograms.map((n) => headerOf(n).code));
    // ZV1001 (unreadable file) and ZV1207 (unknown --param) cannot come from a program's text; tested below.
    const want = Object.keys(CODES).filter((c) => c >= "ZV1002" && c <= "ZV1210" && c !== "ZV1207");
    expect(want.filter((c) => !have.has(c as Code))).toEqual([]);
  });

  it("the valid programs in dsl/ still check (the bad ones fail for their own reason)", async () => {
    for (const f of [ZIPVL, DENSE]) expect((await cli("check", f)).rc).toBe(0);
  });

  it("locations are the same when the program text comes from memory (compileSource)", () => {
    for (const name of ["ZV1201-tau-param.ts", "ZV1102-multiline.ts", "ZV1007-unknown-option.ts"]) {
      const { code, line, col } = headerOf(name);
      let err: unknown;
      try {
        compileSource("in-memory.ts", readFileSync(join(BAD, name), "utf8"));
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(ZipvlError);
      expect((err as ZipvlError).diagnostics[0]).toMatchObject({ code, loc: { file: "in-memory.ts", line, col } });
    }
  });
});

describe("ZV1001: unreadable program file", () => {
  it("a missing file", async () => {
    const missing = join(BAD, "no-such-program.ts");
    const r = await cli("check", missing);
    expectUserError(r, "ZV1001");
    expect(r.err).toContain(`'${missing}': no such file`);
  });
  it("a directory", async () => {
    expectUserError(await cli("check", BAD), "ZV1001");
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Parameters on the command line

const SMALL = ["--shape", "Hq=2,Hkv=1,n=16,d=8"];

describe("ZV1207/ZV1208: --param", () => {
  it("ZV1207: a parameter the program does not declare", async () => {
    const r = await cli("exec", ZIPVL, ...SMALL, "--param", "tua=0.9", "--out", join(tmp, "p1.safetensors"));
    expectUserError(r, "ZV1207");
    expect(r.err).toContain("'tua'");
    expect(r.err).toContain("tau, recent, random, seed, sinks, keep_last");
  });
  it("ZV1208: a value that is not a finite number", async () => {
    for (const v of ["abc", "", "Infinity", "1e999"]) {
      const r = await cli("exec", ZIPVL, ...SMALL, "--param", `tau=${v}`, "--out", join(tmp, "p2.safetensors"));
      expectUserError(r, "ZV1208");
      expect(r.err).toContain("'tau'");
    }
  });
  it("ZV1201: an overridden value is range-checked like a declared one", async () => {
    const r = await cli("exec", ZIPVL, ...SMALL, "--param", "tau=1.5", "--out", join(tmp, "p3.safetensors"));
    expectUserError(r, "ZV1201");
  });
});

// ---------------------------------------------------------------------------------------------------------------
// IR text and passes

const IR = printProgram(compileFile(ZIPVL).input);

describe("ZV1301: IR parse errors", () => {
  it("accepts the printed IR (sanity)", () => {
    expect(() => verifyProgram(parseProgram(IR))).not.toThrow();
  });
  it("an unterminated shape", () => {
    const text = 'program p\nfunc decode {\n  %0 = input name="q" : T[Hq,1,d\n  return o=%0\n}\n';
    expectThrows(() => parseProgram(text), "ZV1301", /^error ZV1301: IR parse error at line 3, col 33: expected '\]'/);
  });
  it("a bad expression inside backticks", () => {
    expectThrows(() => parseProgram(IR.replace("modifier=`s`", "modifier=`s * * 2`")), "ZV1301", /IR parse error at line 14, col \d+: expression syntax error/);
  });
  it("a function without return", () => {
    expectThrows(() => parseProgram(IR.replace("  return o=%3\n", "")), "ZV1301", /function decode: missing return/);
  });
  it("text that ends too early", () => {
    expectThrows(() => parseProgram("program p\nfunc prefill {\n"), "ZV1301", /unexpected end of program/);
  });
});

describe("ZV1302: IR verifier", () => {
  const rejects = (mutated: string, message: RegExp): void => {
    expect(mutated).not.toBe(IR); // the mutation applied
    expectThrows(() => verifyProgram(parseProgram(mutated)), "ZV1302", message);
  };
  it("a wrong result type", () => rejects(IR.replace(": f32[Hq,m,n]", ": f32[Hq,n]"), /IR verifier: zipvl: prefill %5 \(probe_attn\): type f32\[Hq,n\] should be f32\[Hq,m,n\]/));
  it("an undefined value", () => rejects(IR.replace("col_mass %5", "col_mass %42"), /%42 is used before it is defined/));
  it("an unknown attribute", () => rejects(IR.replace('accumulate="layer"', 'accumulate="layer" bogus=1'), /unknown attribute 'bogus'/));
  it("an output that refers to nothing", () => rejects(IR.replace("return o=%3", "return o=%7"), /output 'o' refers to undefined %7/));
});

describe("ZV1303: unknown pass", () => {
  it("runPasses(..., until) with a pass that does not exist", () => {
    const { input } = compileFile(ZIPVL);
    expectThrows(() => runPasses(input, undefined, "nosuchpass"), "ZV1303", /unknown pass 'nosuchpass'; passes are: input, fold-constants, /);
  });
  it("check --dump-after nosuchpass", async () => {
    const r = await cli("check", ZIPVL, "--dump-after", "nosuchpass");
    expect(r.err).toContain("fold-constants");
    expectUserError(r, "ZV1303");
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Files: reading and writing safetensors

/** Writes raw bytes: an 8-byte little-endian header length, the header text, then data. */
function rawSafetensors(name: string, header: string, data: number[] = []): string {
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(Buffer.byteLength(header)));
  const path = join(tmp, name);
  writeFileSync(path, Buffer.concat([len, Buffer.from(header), Buffer.from(data)]));
  return path;
}

const execIn = (path: string, ...more: string[]): Promise<Run> => cli("exec", DENSE, "--in", path, "--out", join(tmp, "out.safetensors"), ...more);

describe("ZV2001..ZV2005: tensor files", () => {
  it("ZV2001: --in names a missing file", async () => {
    const r = await execIn(join(tmp, "missing.safetensors"));
    expectUserError(r, "ZV2001");
    expect(r.err).toContain("missing.safetensors");
  });
  it("ZV2002: --in names a file that is not safetensors", async () => {
    const path = join(tmp, "short.bin");
    writeFileSync(path, "abc");
    expectUserError(await execIn(path), "ZV2002");
    expectUserError(await execIn(rawSafetensors("notjson.safetensors", "[1,2,3]")), "ZV2002");
  });
  it("ZV2003: a header that is not valid JSON, or an entry without offsets", async () => {
    expectUserError(await execIn(rawSafetensors("badjson.safetensors", '{"q": ')), "ZV2003");
    expectUserError(await execIn(rawSafetensors("nooffsets.safetensors", '{"q":{"dtype":"F32","shape":[1]}}')), "ZV2003");
  });
  it("ZV2004: a dtype zipvl does not read", async () => {
    const r = await execIn(rawSafetensors("f8.safetensors", '{"q":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[0,1]}}', [0]));
    expectUserError(r, "ZV2004");
    expect(r.err).toContain("F8_E4M3");
  });
  it("ZV2005: --out in a directory that does not exist", async () => {
    const r = await cli("exec", DENSE, ...SMALL, "--out", join(tmp, "no", "such", "dir", "out.safetensors"));
    expectUserError(r, "ZV2005");
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Inputs: exec --in with crafted q, k, v

const filled = (dtype: DType, shape: number[]): Tensor => {
  const t = makeTensor(dtype, shape);
  for (let i = 0; i < t.data.length; i++) t.data[i] = dtype === "i32" ? i : ((i * 37) % 11) / 11 - 0.5;
  return t;
};
let nInputs = 0;
function inputs(tensors: Record<string, Tensor>): string {
  const path = join(tmp, `in${nInputs++}.safetensors`);
  writeSafetensors(path, tensors);
  return path;
}
const qkv = (Hq = 2, Hkv = 1, n = 8, d = 4, dtype: DType = "f32"): Record<string, Tensor> => ({
  q: filled(dtype, [Hq, n, d]),
  k: filled(dtype, [Hkv, n, d]),
  v: filled(dtype, [Hkv, n, d]),
});

describe("ZV2101..ZV2106: inputs", () => {
  it("well-formed inputs run (sanity)", async () => {
    const r = await execIn(inputs(qkv()));
    expect(r.err).toBe("");
    expect(r.rc).toBe(0);
  });
  it("ZV2101: k is missing", async () => {
    const { q, v } = qkv();
    const r = await execIn(inputs({ q: q!, v: v! }));
    expectUserError(r, "ZV2101");
    expect(r.err).toContain("missing input tensor 'k' (inputs: q, v)");
  });
  it("ZV2101: decode without k_cache", async () => {
    const r = await execIn(inputs({ q: filled("f32", [2, 1, 4]), v_cache: filled("f32", [1, 8, 4]) }), "--entry", "decode");
    expectUserError(r, "ZV2101");
    expect(r.err).toContain("'k_cache'");
  });
  it("ZV2102: k has the wrong rank", async () => {
    const r = await execIn(inputs({ ...qkv(), k: filled("f32", [8, 4]) }));
    expectUserError(r, "ZV2102");
    expect(r.err).toContain("k must be [heads, n, head_dim], got f32[8,4]");
  });
  it("ZV2102: k has a different sequence length than q", async () => {
    expectUserError(await execIn(inputs({ ...qkv(), k: filled("f32", [1, 7, 4]) })), "ZV2102");
  });
  it("ZV2103: an f16 q with f32 k and v", async () => {
    const r = await execIn(inputs({ ...qkv(), q: filled("f16", [2, 8, 4]) }));
    expectUserError(r, "ZV2103");
    expect(r.err).toContain("f16, f32, f32");
  });
  it("ZV2103: an integer q", async () => {
    expectUserError(await execIn(inputs({ ...qkv(), q: filled("i32", [2, 8, 4]) })), "ZV2103");
  });
  it("ZV2104: query heads not a multiple of KV heads", async () => {
    const r = await execIn(inputs(qkv(3, 2)));
    expectUserError(r, "ZV2104");
    expect(r.err).toContain("query heads (3) must be a multiple of KV heads (2)");
  });
  it("ZV2105: renderKernels at a head dim the cuda kernels are not instantiated for", () => {
    expectThrows(() => renderKernels(compileFile(DENSE).final, "f32", 8, 90), "ZV2105", /head dim 8 is not supported by the cuda backend \(supported: /);
  });
  // The cuda executor needs a driver before it looks at the inputs: the mock driver stands in for one. A child
  // process, because a process loads one CUDA driver for good (the ZV4001 test below must not find the mock).
  it.skipIf(!existsSync(MOCK_DRIVER) || !existsSync(ADDON))("ZV2105: exec --backend cuda (mock driver) with head dim 4", () => {
    const path = inputs(qkv());
    const r = spawnSync(process.execPath, [join(root, "bin", "zipvl.js"), "exec", DENSE, "--in", path, "--backend", "cuda", "--out", join(tmp, "cuda.safetensors")], {
      encoding: "utf8",
      env: { ...process.env, ZIPVL_LIBCUDA: MOCK_DRIVER },
    });
    expectUserError({ rc: r.status ?? -1, out: r.stdout.trimEnd(), err: r.stderr.trimEnd() }, "ZV2105");
    expect(r.stderr).toContain("head dim 4 is not supported by the cuda backend");
  });
  // On the mock driver no kernel runs, so the poisoned kept count (-1) comes back: the coded fault, not a crash.
  it.skipIf(!existsSync(MOCK_DRIVER) || !existsSync(ADDON) || !existsSync(knobs.nvcc))("ZV4003: exec --backend cuda (mock driver) returns garbage", () => {
    const path = inputs(qkv(2, 1, 8, 64));
    const r = spawnSync(process.execPath, [join(root, "bin", "zipvl.js"), "exec", DENSE, "--in", path, "--backend", "cuda", "--out", join(tmp, "cuda3.safetensors")], {
      encoding: "utf8",
      env: { ...process.env, ZIPVL_LIBCUDA: MOCK_DRIVER },
    });
    expectUserError({ rc: r.status ?? -1, out: r.stdout.trimEnd(), err: r.stderr.trimEnd() }, "ZV4003");
    expect(r.stderr).toContain("kept count -1 outside");
  });
  it("ZV2106: explicit probes not ascending", async () => {
    const r = await execIn(inputs({ ...qkv(), probes: makeTensor("i32", [2], Int32Array.from([5, 3])) }));
    expectUserError(r, "ZV2106");
    expect(r.err).toContain("strictly ascending");
  });
  it("ZV2106: explicit probes out of range", async () => {
    const r = await execIn(inputs({ ...qkv(), probes: makeTensor("i32", [2], Int32Array.from([0, 100])) }));
    expectUserError(r, "ZV2106");
    expect(r.err).toContain("position 100 is outside [0, 8)");
  });
  it("ZV2106: explicit probes of the wrong dtype", async () => {
    expectUserError(await execIn(inputs({ ...qkv(), probes: filled("f32", [2]) })), "ZV2106");
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Backends and the command line

describe("ZV4001: backend not available", () => {
  // Which backends work depends on the machine (and on how far each backend is built). Each of these either runs
  // or fails as a plain user error with a backend or runtime code; at least one must say ZV4001 here.
  // No kernel compiler at all (no nvcc, no NVRTC) behind a (mock) driver: the cuda backend cannot be used.
  it.skipIf(!existsSync(MOCK_DRIVER) || !existsSync(ADDON))("exec --backend cuda with neither nvcc nor NVRTC", () => {
    const path = inputs(qkv(2, 1, 8, 64));
    const r = spawnSync(process.execPath, [join(root, "bin", "zipvl.js"), "exec", DENSE, "--in", path, "--backend", "cuda", "--out", join(tmp, "cuda4.safetensors")], {
      encoding: "utf8",
      env: { ...process.env, ZIPVL_LIBCUDA: MOCK_DRIVER, ZIPVL_NVCC: "/nonexistent/nvcc", ZIPVL_LIBNVRTC: "/nonexistent/libnvrtc.so" },
    });
    expectUserError({ rc: r.status ?? -1, out: r.stdout.trimEnd(), err: r.stderr.trimEnd() }, "ZV4001");
    expect(r.stderr).toContain("neither nvcc nor NVRTC");
  });
});

describe("ZV4002: backend lacks a feature", () => {
  it("compile --target cuda of a program with a score modifier in decode()", async () => {
    // Rendering rejects the feature before nvcc runs. When the cuda backend learns it, pick another gap.
    const r = await cli("compile", join(root, "test", "programs", "gaps", "decode-softcap.ts"), "--target", "cuda", "--out", join(tmp, "cuda-gap"));
    expectUserError(r, "ZV4002");
    expect(r.err).toContain("score modifiers in decode()");
  });
});

describe("ZV5001: command line", () => {
  it("an unknown command", async () => {
    const r = await cli("frobnicate", ZIPVL);
    expectUserError(r, "ZV5001");
    expect(r.err).toContain("unknown command 'frobnicate'");
  });
  it("an unknown flag", async () => {
    const r = await cli("check", ZIPVL, "--frobnicate");
    expectUserError(r, "ZV5001");
    expect(r.err).toContain("--frobnicate");
  });
  it("a missing program file argument, an unknown backend", async () => {
    expectUserError(await cli("check"), "ZV5001");
    expectUserError(await cli("exec", DENSE, ...SMALL, "--backend", "tpu"), "ZV5001");
  });
});

// ---------------------------------------------------------------------------------------------------------------

/** Codes this file covers: all of CODES except the runtimes' (ZV30xx, ZV31xx). */
const COVERED: readonly string[] = [
  "ZV1001", "ZV1002", "ZV1003", "ZV1004", "ZV1005", "ZV1006", "ZV1007", "ZV1008", "ZV1009",
  "ZV1101", "ZV1102", "ZV1103", "ZV1104",
  "ZV1201", "ZV1202", "ZV1203", "ZV1204", "ZV1205", "ZV1206", "ZV1207", "ZV1208", "ZV1209", "ZV1210",
  "ZV1301", "ZV1302", "ZV1303",
  "ZV2001", "ZV2002", "ZV2003", "ZV2004", "ZV2005",
  "ZV2101", "ZV2102", "ZV2103", "ZV2104", "ZV2105", "ZV2106",
  "ZV4001", "ZV4002", "ZV4003",
  "ZV5001",
];
const isRuntimeCode = (c: string): boolean => /^ZV3[01]\d\d$/.test(c); // tested with the runtimes

describe("coverage", () => {
  it("every code in CODES is covered by a test in this file", () => {
    const table = Object.keys(CODES).filter((c) => !isRuntimeCode(c));
    expect([...COVERED].sort()).toEqual(table.sort());
    // ...and each listed code was really asserted by a test above (run the whole file).
    expect(COVERED.filter((c) => !seen.has(c))).toEqual([]);
  });
});
