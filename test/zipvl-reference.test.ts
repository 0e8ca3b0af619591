import { compileFile, compileSource } from "../src/driver.ts";
import { interpret } from "../src/interp/run.ts";
import { randomTensor } from "../src/io/random.ts";
import { it } from "vitest";
import { readFileSync } from "node:fs";
it("x", () => {
const c = compileFile("dsl/zipvl.ts");
const n=10,d=4,Hq=4,Hkv=2;
const ins = new Map([["q",randomTensor("f32",[Hq,n,d],1)],["k",randomTensor("f32",[Hkv,n,d],2)],["v",randomTensor("f32",[Hkv,n,d],3)]]);
for (const p of [c.input, c.final]) {
  const out = interpret(p, "prefill", ins, { params: { recent: 3, random: 2, tau: 0.9 } });
  for (const [k,t] of out) console.log(k, t.dtype, t.shape, Array.from(t.data).slice(0,12).map(x=>+x.toFixed(4)).join(" "));
}
const txt = readFileSync("dsl/zipvl.ts","utf8").replace('accumulate: "layer"','accumulate: "kv_head"');
const c2 = compileSource("dsl/zipvl_kv.ts", txt);
const out = interpret(c2.final, "prefill", ins, { params: { recent: 3, random: 2, tau: 0.9 } });
for (const [k,t] of out) console.log(k, t.dtype, t.shape, Array.from(t.data).slice(0,12).map(x=>+x.toFixed(4)).join(" "));
});
