// The fused decoder-layer pieces (ModelOps' optional FusedModelOps) and their spec: each function asks the backend
// for the fused form and, when it has none for this shape (or returns undefined), runs the composition of plain
// ops written here. Backends fuse for decode's few token rows (cuda: zv_gemv.cuh); prefill runs the composition.
import type { DTensor, KvSink, ModelOps, NormSpec, Projection, RopeAt } from "./ops.ts";

/** For each projection: linear of the (normed) x, then toHeads and rope when asked. The composition leaves a sink
 *  unwritten (the caller appends k and v). */
export function normProject(ops: ModelOps, x: DTensor, norm: NormSpec | undefined, projs: readonly Projection[], rope: RopeAt | undefined, sink?: KvSink): DTensor[] {
  const fused = ops.normProject?.(x, norm, projs, rope, sink);
  if (fused) return fused;
  const n = norm ? ops.rmsNorm(x, norm.w, norm.eps) : x;
  const out: DTensor[] = [];
  try {
    for (const p of projs) {
      const y = ops.linear(n, p.w, p.bias);
      if (p.heads <= 0) {
        out.push(y);
        continue;
      }
      const h = ops.toHeads(y, p.heads);
      ops.free(y);
      if (!p.rope) {
        out.push(h);
        continue;
      }
      if (!rope) {
        ops.free(h);
        throw new RangeError("normProject: a rope projection without positions");
      }
      out.push(ops.rope(h, rope.positions, rope.invFreq, rope.scale));
      ops.free(h);
    }
    return out;
  } catch (e) {
    for (const t of out) ops.free(t);
    throw e;
  } finally {
    if (n !== x) ops.free(n);
  }
}

/** residual + linear(x, w, bias); a 3-D x is head-major [H, M, d] (the attention output). Frees what it made, also
 *  when an op throws (an out-of-memory prefill must not leak). */
export function linearAdd(ops: ModelOps, x: DTensor, w: DTensor, bias: DTensor | undefined, residual: DTensor): DTensor {
  const fused = ops.linearAdd?.(x, w, bias, residual);
  if (fused) return fused;
  const rows = x.shape.length === 3 ? ops.fromHeads(x) : x;
  let y: DTensor;
  try {
    y = ops.linear(rows, w, bias);
  } finally {
    if (rows !== x) ops.free(rows);
  }
  try {
    return ops.add(residual, y);
  } finally {
    ops.free(y);
  }
}

/** silu(linear(n, gate)) * linear(n, up) with n = rmsNorm(x). */
export function normGatedUp(ops: ModelOps, x: DTensor, norm: NormSpec, gate: { w: DTensor; bias?: DTensor | undefined }, up: { w: DTensor; bias?: DTensor | undefined }): DTensor {
  const fused = ops.normGatedUp?.(x, norm, gate, up);
  if (fused) return fused;
  const made: DTensor[] = [];
  try {
    const n = ops.rmsNorm(x, norm.w, norm.eps);
    made.push(n);
    const g = ops.linear(n, gate.w, gate.bias);
    made.push(g);
    const u = ops.linear(n, up.w, up.bias);
    made.push(u);
    return ops.siluMul(g, u);
  } finally {
    for (const t of made) ops.free(t);
  }
}
