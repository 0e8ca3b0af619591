// The host's argument layouts (src/backends/cuda/args.ts) against the device's structs (zv_args.cuh): the header is
// plain C++, so g++ compiles a program that prints every field's offset and each struct's size.
import { spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { ARG_LAYOUTS } from "../src/backends/cuda/args.ts";
import { INCLUDE_DIR } from "../src/backends/cuda/render.ts";

const haveGxx = spawnSync("g++", ["--version"]).status === 0;
if (!haveGxx) console.warn("NOTICE: g++ not found; the argument-layout test is skipped");

describe.skipIf(!haveGxx)("kernel argument blocks", () => {
  it("every field sits at 8 * its index and no field is missing", () => {
    const dir = mkdtempSync(join(tmpdir(), "zipvl-args-"));
    const lines = Object.entries(ARG_LAYOUTS).flatMap(([s, fields]) => [
      `  std::printf("%s size %zu\\n", "${s}", sizeof(${s}));`,
      ...fields.map((f) => `  std::printf("%s.%s %zu\\n", "${s}", "${f}", offsetof(${s}, ${f}));`),
    ]);
    writeFileSync(join(dir, "layout.cc"), `#include <cstddef>\n#include <cstdio>\n#include "zv_args.cuh"\nint main() {\n${lines.join("\n")}\n}\n`);
    const cc = spawnSync("g++", ["-std=c++17", "-I", INCLUDE_DIR, "-o", join(dir, "layout"), join(dir, "layout.cc")], { encoding: "utf8" });
    expect(cc.status, cc.stderr).toBe(0);
    const out = spawnSync(join(dir, "layout"), { encoding: "utf8" }).stdout;
    const got = new Map(out.trim().split("\n").map((l) => l.split(" ")).map(([k, ...v]) => [k!, Number(v.at(-1))]));
    for (const [s, fields] of Object.entries(ARG_LAYOUTS)) {
      expect(got.get(s), `sizeof(${s}): a device field the host does not pack`).toBe(8 * fields.length);
      fields.forEach((f, i) => expect(got.get(`${s}.${f}`), `${s}.${f}`).toBe(8 * i));
    }
  });
});
