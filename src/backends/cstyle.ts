// The C-like expression renderer shared by the CUDA and WGSL backends (tinygrad's cstyle renderer in spirit):
// the same tree walk, with a small table of per-language leaf renderings. Parameters live in a `P` array of
// doubles (slot 0: layer; then the program's parameters in declaration order), so one compiled kernel serves
// every parameter value.
import type { Expr } from "../expr/ast.ts";
import { renderExpr, type Rendering } from "../expr/print.ts";
import type { Program } from "../ir/ir.ts";

export interface Slots {
  readonly names: readonly string[];
  index(name: string): number | undefined;
}

export function paramSlots(p: Program): Slots {
  const names = ["layer", ...p.params.map((x) => x.name)];
  return { names, index: (n) => (names.includes(n) ? names.indexOf(n) : undefined) };
}

/** The P array for a bound environment, in slot order. */
export function slotValues(slots: Slots, env: Readonly<Record<string, number>>): Float64Array {
  return Float64Array.from(slots.names, (n) => env[n] ?? 0);
}

const cNumber = (v: number): string => {
  if (!Number.isFinite(v)) return Number.isNaN(v) ? "(0.0/0.0)" : v > 0 ? "(1.0/0.0)" : "(-1.0/0.0)";
  const s = String(v);
  return /[.eE]/.test(s) ? s : `${s}.0`;
};

/**
 * CUDA: positions stay integers (`q_pos >= k_pos` is one integer compare in the hot loop), everything else is
 * double, so results equal the interpreter's f64 arithmetic: division is always floating point and function
 * arguments are converted to double (min/max/abs map to fmin/fmax/fabs, avoiding int/float overload ambiguity).
 */
export function cudaRendering(slots: Slots, headDim: number): Rendering {
  const FN: Record<string, string> = { min: "fmin", max: "fmax", abs: "fabs" };
  return {
    num: (v) => (Number.isInteger(v) && Math.abs(v) < 2 ** 31 ? String(v) : cNumber(v)),
    bool: (v) => String(v),
    var: (name) => {
      if (name === "s" || name === "q_pos" || name === "k_pos" || name === "n" || name === "pos") return name;
      if (name === "d") return String(headDim);
      const i = slots.index(name);
      if (i === undefined) throw new Error(`internal: no slot for '${name}'`);
      return `P[${i}]`;
    },
    call: (fn, args) => `${FN[fn] ?? fn}(${args.map((a) => `(double)(${a})`).join(", ")})`,
    cond: (c, a, b) => `(${c} ? (double)(${a}) : (double)(${b}))`,
    mod: (a, b) => `fmod((double)(${a}), (double)(${b}))`,
    div: (a, b) => `((double)(${a}) / (double)(${b}))`,
  };
}

/** WGSL: f32 arithmetic; positions arrive as i32 and are converted once per use. */
export function wgslRendering(slots: Slots, headDim: number): Rendering {
  const num = (v: number): string => {
    if (!Number.isFinite(v)) return Number.isNaN(v) ? "bitcast<f32>(0x7fc00000u)" : v > 0 ? "bitcast<f32>(0x7f800000u)" : "bitcast<f32>(0xff800000u)";
    const s = String(Math.fround(v) === v ? v : Math.fround(v));
    return /[.eE]/.test(s) ? `${s}f` : `${s}.0f`;
  };
  return {
    num,
    bool: (v) => String(v),
    var: (name) => {
      if (name === "s") return "s";
      if (name === "q_pos" || name === "k_pos" || name === "n" || name === "pos") return `f32(${name})`;
      if (name === "d") return num(headDim);
      const i = slots.index(name);
      if (i === undefined) throw new Error(`internal: no slot for '${name}'`);
      return `P[${i}]`;
    },
    call: (fn, args) => `${fn}(${args.join(", ")})`,
    cond: (c, a, b) => `select(${b}, ${a}, ${c})`,
    parenAll: true,
  };
}

export const renderC = (e: Expr, slots: Slots, headDim: number): string => renderExpr(e, cudaRendering(slots, headDim));
export const renderWgsl = (e: Expr, slots: Slots, headDim: number): string => renderExpr(e, wgslRendering(slots, headDim));
