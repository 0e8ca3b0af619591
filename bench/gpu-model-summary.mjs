// The final table of bench/gpu-model.sh: reads what the parts left under OUT (status.tsv and each part's JSON or
// log) and prints one markdown summary (also written to OUT/summary.md). Plain JavaScript without imports beyond
// node:, so the unpacked Node binary runs it on the GPU host. Usage: node bench/gpu-model-summary.mjs OUT
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

const out = process.argv[2];
if (!out) {
  process.stderr.write("usage: node bench/gpu-model-summary.mjs OUT\n");
  process.exit(2);
}
const lines = [];
const say = (s) => lines.push(s);
const read = (f) => {
  const p = join(out, f);
  if (!existsSync(p)) return undefined;
  try {
    return JSON.parse(readFileSync(p, "utf8"));
  } catch {
    return undefined; // a part killed mid-write: its status row says why
  }
};
const e = (x) => (typeof x === "number" && Number.isFinite(x) ? x.toExponential(2) : "-");
const f = (x, d = 1) => (typeof x === "number" && Number.isFinite(x) ? x.toFixed(d) : "-");
const cell = (answer) => JSON.stringify(answer ?? "").slice(0, 40).replace(/\|/g, "/");
const mean = (xs) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN);

say("## Steps");
say("| part | step | status | detail |");
say("|---|---|---|---|");
const status = existsSync(join(out, "status.tsv")) ? readFileSync(join(out, "status.tsv"), "utf8").trim().split("\n").filter(Boolean) : [];
for (const row of status) {
  const [part, step, st, ...rest] = row.split("\t");
  say(`| ${part} | ${step} | ${st} | ${rest.join(" ").replace(/\|/g, "/")} |`);
}

const parity = [];
for (const dt of ["f32", "bf16"]) {
  for (const [be, sfx] of [["cuda", ""], ["cuda", "-tau1"], ["cpu", ""], ["cpu", "-tau1"]]) {
    const j = read(`parity-${dt}-${be}${sfx}.json`);
    if (!j) continue;
    for (const r of sfx ? [j.zipvl] : [j.dense, j.zipvl]) {
      if (!r) continue;
      parity.push(`| ${dt} ref | ${j.backend} ${j.dtype} | ${r.mode}${sfx ? " tau 1" : ""} | ${e(r.maxAbsLast)} | ${e(r.maxRelLast)} | ${e(r.maxAbsAll)} | ${e(r.maxRelAll)} | ` +
        `${r.argmaxMatch ? "yes" : "NO"} | ${r.greedyMatch}/${j.refGreedy?.length ?? "?"} | ${r.mode === "dense" ? (j.promptMatch === null ? "-" : j.promptMatch ? "same" : "DIFFERS") : (r.kept ?? []).join(" ")} |`);
    }
  }
}
if (parity.length) {
  say("\n## (a) parity with transformers (tiny random LLaVA-Next; rel = max |ours - ref| / max |ref|; the reference is dense,");
  say("so the zipvl rows measure what pruning changes on a random model, the dense rows the runtime's correctness)");
  say("| reference | ours | mode | last abs | last rel | all abs | all rel | argmax | greedy | prompt ids / kept per layer |");
  say("|---|---|---|---:|---:|---:|---:|---|---|---|");
  for (const l of parity) say(l);
}

const check = read("model-gpu-check/model-gpu-check.json");
if (check) {
  say(`\n## (b) ModelOps and the small model, cuda vs cpu (seed ${check.seed})`);
  say("| dtype | ops ok | ops failed | worst op (err / tol) | model rows (logits err, tokens) |");
  say("|---|---:|---:|---|---|");
  for (const dt of ["f32", "bf16"]) {
    const d = check[dt];
    if (!d) continue;
    const ops = d.ops ?? [];
    const worst = ops.reduce((w, r) => (!w || r.err / r.tol > w.err / w.tol ? r : w), undefined);
    const model = (d.model ?? []).map((m) => `${m.mode} ${e(m.logitsErr)} ${m.tokensCpu?.join() === m.tokensCuda?.join() ? "same" : "differ"}`).join("; ");
    say(`| ${dt} | ${ops.filter((r) => r.ok).length} | ${ops.filter((r) => !r.ok).length} | ${worst ? `${worst.op} ${e(worst.err)} / ${e(worst.tol)}` : "-"} | ${model} |`);
  }
}

const runs = [];
for (const dt of ["bf16", "f32"]) {
  for (const mode of ["dense", "zipvl"]) {
    const j = read(`run-${dt}-${mode}.json`);
    if (!j) continue;
    const kept = mean((j.layers ?? []).map((l) => l.ratio));
    runs.push(`| ${j.backend} ${dt} | ${j.mode}${j.policy ? ` (${j.policy})` : ""} | ${j.promptTokens} | ${f(j.prefillMs)} | ${j.decodeSteps} | ${f(j.decodeTokensPerSecond)} | ${f(100 * kept)}% | ${cell(j.answer)} |`);
  }
}
const demo = read("demo-medium.json");
if (demo) {
  for (const r of [demo.dense, demo.zipvl]) {
    if (!r) continue;
    const kept = mean((r.layers ?? []).map((l) => l.ratio));
    runs.push(`| ${r.backend} medium demo | ${r.mode} | ${r.promptTokens} | ${f(r.prefillMs)} | ${r.decodeSteps} | ${f(r.decodeTokensPerSecond)} | ${f(100 * kept)}% | ${cell(r.answer)} |`);
  }
}
if (runs.length) {
  say("\n## (c) zipvl run (second run of each, kernels cached)");
  say("| backend | mode | prompt tokens | prefill ms | decode steps | tokens/s | kept | answer |");
  say("|---|---|---:|---:|---:|---:|---:|---|");
  for (const l of runs) say(l);
}

// A run cut by its timeout writes no JSON: its rows are read back from the lines it printed.
const logRows = (file, re, row) => {
  const p = join(out, file);
  if (!existsSync(p)) return undefined;
  const rows = [...readFileSync(p, "utf8").matchAll(re)].map(row);
  return rows.length ? { rows, fromLog: true } : undefined;
};
const num = Number;
const scale = read("llava-scale/llava-scale.json") ?? logRows("llava-scale.txt",
  /^(dense|zipvl[^\n]*?)\s+n\s+(\d+)\s+prefill\s+([\d.]+) ms\s+decode\s+([\d.]+) ms\/token \(([\d.]+) tok\/s\)\s+kept ([\d.]+)%/gm,
  (m) => ({ mode: m[1].trim(), n: num(m[2]), prefillMs: num(m[3]), decodeMsPerToken: num(m[4]), tokensPerS: num(m[5]), keptMean: num(m[6]) / 100 }));
const hf = read("llava_scale_hf.json") ?? logRows("llava_scale_hf.txt",
  /^\[(\w+)\] n\s+(\d+)\s+(?:(OOM)|prefill\s+([\d.]+) ms\s+decode\s+([\d.]+) ms\/token \(([\d.]+) tok\/s\))/gm,
  (m) => (m[3] ? { attn: m[1], n: num(m[2]), error: "OOM" } : { attn: m[1], n: num(m[2]), prefill_ms: num(m[4]), decode_ms_per_token: num(m[5]), tokens_per_s: num(m[6]) }));
if (scale || hf) {
  say(`\n## (d) 13B-shaped decoder (${scale?.layers ?? hf?.layers ?? "?"} layers, bf16)${scale?.fromLog || hf?.fromLog ? "; rows read from a log (the run was cut short)" : ""}`);
  say("| runtime | mode | tokens | prefill ms | decode ms/token | tokens/s | kept |");
  say("|---|---|---:|---:|---:|---:|---:|");
  for (const r of scale?.rows ?? []) say(`| zipvl cuda | ${r.mode} | ${r.n} | ${f(r.prefillMs, 0)} | ${f(r.decodeMsPerToken)} | ${f(r.tokensPerS)} | ${f(100 * r.keptMean)}% |`);
  for (const r of hf?.rows ?? []) say(`| transformers | ${r.attn} | ${r.n} | ${r.error ?? f(r.prefill_ms, 0)} | ${f(r.decode_ms_per_token)} | ${f(r.tokens_per_s)} | 100% |`);
}

const text = lines.join("\n") + "\n";
writeFileSync(join(out, "summary.md"), text);
process.stdout.write(text);
