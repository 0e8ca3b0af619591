// DecodeAhead (src/serve/ahead.ts) over a fake GreedySteps whose "model" is a hash of (sequence, position, token):
// property (fast-check) that, over random runs of joins, stop tokens, token limits and cancellations driven the way
// the scheduler drives it (ahead only when no admission is pending), every call returns exactly the tokens of
// decoding one step at a time, a launch takes ids from the device only right after a launch of the same rows in the
// same order, and steps overlap (a step in flight while the host reads the previous one). Contract breaks are coded.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { DecodeAhead } from "../src/serve/ahead.ts";
import { ServeError } from "../src/serve/errors.ts";
import type { DecodeRow, GreedySteps, StepTicket } from "../src/serve/step.ts";

const runs = Number(process.env.ZIPVL_FC_RUNS ?? "0") || 100;
const V = 50;
const f = (seq: string, position: number, token: number): number => {
  let h = 2166136261;
  for (const c of `${seq}/${position}/${token}`) h = Math.imul(h ^ c.charCodeAt(0), 16777619);
  return (h >>> 0) % V;
};

/** The fake device: ids of the last launch stay "on the device"; tickets hold their rows' tokens until collected. */
function fakeSteps() {
  let device: { seqs: string[]; ids: number[] } | null = null;
  const open = new Set<StepTicket>();
  const log = { launches: 0, fromDevice: 0, maxOpen: 0 };
  const out = new Map<StepTicket, Int32Array>();
  const g: GreedySteps = {
    deviceIds: true,
    launch(batch: readonly DecodeRow[], fromDevice: boolean): StepTicket {
      const seqs = batch.map((r) => r.seq);
      if (fromDevice) {
        if (!device || device.seqs.join() !== seqs.join()) throw new Error(`fromDevice after a launch of other rows (${device?.seqs} vs ${seqs})`);
        log.fromDevice++;
      }
      const ids = batch.map((r, i) => f(r.seq, r.position, fromDevice ? device!.ids[i]! : r.token));
      device = { seqs, ids };
      const t: StepTicket = { seqs };
      out.set(t, Int32Array.from(ids));
      open.add(t);
      log.launches++;
      log.maxOpen = Math.max(log.maxOpen, open.size);
      return t;
    },
    collect(t: StepTicket): Int32Array {
      if (!open.delete(t)) throw new Error("collected twice");
      return out.get(t)!;
    },
  };
  return { g, log, open };
}

describe("DecodeAhead", () => {
  it("equals one step at a time under joins, stops, limits and cancellations", () => {
    const seen = { served: 0, mixed: 0 };
    const action = fc.oneof(fc.constant("step" as const), fc.constant("join" as const), fc.constant("cancel" as const));
    fc.assert(
      fc.property(fc.array(action, { minLength: 1, maxLength: 60 }), fc.integer({ min: 0, max: V - 1 }), fc.nat(1000), (actions, stopToken, salt) => {
        const { g, log, open } = fakeSteps();
        const live = new Map<string, { pos: number; last: number; left: number }>();
        const ahead = new DecodeAhead(g, (s) => live.has(s));
        let next = 0;
        let pendingJoin = false;
        let steps = 0;
        for (const a of actions) {
          if (a === "join") {
            pendingJoin = true; // admitted before the next step, like the scheduler's admit()
            continue;
          }
          if (a === "cancel") {
            const first = [...live.keys()][salt % Math.max(1, live.size)];
            if (first !== undefined) live.delete(first);
            continue;
          }
          if (pendingJoin) {
            const id = `s${next++}`;
            live.set(id, { pos: 10 + ((salt + next * 7) % 30), last: (salt + next) % V, left: 1 + ((salt * next) % 9) });
            pendingJoin = false;
          }
          if (live.size === 0) continue;
          const batch = [...live.entries()].map(([seq, s]) => ({ seq, token: s.last, position: s.pos }));
          // The scheduler's hint: no admission pending now and nobody at its limit (a join may still come before the
          // next step: then that step is partly served by the step in flight).
          const got = ahead.decode(batch, [...live.values()].every((s) => s.left > 1));
          steps++;
          batch.forEach((r, i) => {
            expect(got[i]).toBe(f(r.seq, r.position, r.token));
            const s = live.get(r.seq)!;
            s.last = got[i]!;
            s.pos++;
            s.left--;
            if (s.left === 0 || s.last === stopToken) live.delete(r.seq);
          });
        }
        ahead.flush();
        seen.served += ahead.stats.served;
        seen.mixed += ahead.stats.mixed;
        expect(open.size).toBe(0);
        // At most: the step in flight (all its rows finished), the fresh one, and the next one ahead.
        expect(log.maxOpen).toBeLessThanOrEqual(3);
        if (steps > 0) expect(log.launches).toBeGreaterThanOrEqual(steps);
      }),
      { numRuns: runs },
    );
    // The runs did serve steps from the one in flight, also together with a fresh step for a newcomer.
    expect(seen.served).toBeGreaterThan(0);
    expect(seen.mixed).toBeGreaterThan(0);
  });

  it("keeps a step in flight for a steady batch and serves the next call from it", () => {
    const { g, log } = fakeSteps();
    const ahead = new DecodeAhead(g, () => true);
    let rows = [{ seq: "a", token: 3, position: 5 }, { seq: "b", token: 4, position: 9 }];
    for (let i = 0; i < 5; i++) {
      const got = ahead.decode(rows, true);
      rows = rows.map((r, b) => ({ seq: r.seq, token: got[b]!, position: r.position + 1 }));
    }
    // One fresh launch, then every step launched from the device ids while the previous one is read.
    expect(log).toMatchObject({ launches: 6, fromDevice: 5, maxOpen: 2 });
    expect(ahead.stats).toEqual({ launched: 1, ahead: 5, served: 4, mixed: 0 });
    ahead.flush();
  });

  it("coded errors when the next call breaks the contract; the dropped step's sequences may not decode again", () => {
    const { g, open } = fakeSteps();
    const live = new Set(["a", "z"]);
    const ahead = new DecodeAhead(g, (s) => live.has(s));
    const got = ahead.decode([{ seq: "a", token: 3, position: 5 }], true);
    const wrong = () => ahead.decode([{ seq: "a", token: (got[0]! + 1) % V, position: 6 }], false);
    expect(wrong).toThrow(/ZV7040.*was decoded ahead at position 6/);
    expect(open.size).toBe(0); // the step in flight was waited for
    // a's cache holds that step's row: decoding it again is refused until it is released; others decode.
    expect(wrong).toThrow(/ZV7040.*holds a step decoded ahead and dropped/);
    expect(ahead.decode([{ seq: "z", token: 1, position: 2 }], false)).toEqual([f("z", 2, 1)]);
    // Once released, the mark goes (the scheduler never reuses an id).
    live.delete("a");
    ahead.decode([{ seq: "z", token: 2, position: 3 }], false);
    expect((ahead as unknown as { dropped: Set<string> }).dropped.size).toBe(0);
    const b = new DecodeAhead(fakeSteps().g, () => true);
    b.decode([{ seq: "a", token: 3, position: 5 }, { seq: "b", token: 1, position: 2 }], true);
    let err: unknown;
    try {
      b.decode([{ seq: "a", token: 0, position: 6 }], false);
    } catch (e) {
      err = e;
    }
    expect((err as ServeError).code).toBe("ZV7040");
  });
});
