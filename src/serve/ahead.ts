// Greedy decode with one step in flight (over a StepRunner's GreedySteps): when the caller says the same sequences
// decode again next (`ahead`), step n + 1 is enqueued, its tokens taken from step n's greedy ids on the device,
// before the host reads step n's tokens, so the host's work between steps (tokens out, bookkeeping, the next step's
// tables) overlaps the GPU instead of idling it.
// The next call must then decode a subset of those sequences (the others released, e.g. finished on a stop token)
// at the next positions with the tokens returned: those rows are served by the step already in flight; rows it does
// not cover (a sequence admitted since) get a fresh step of their own in the same call. Each row still gets exactly
// one step per call, at its own position, so the tokens are those of decoding one step at a time. At most three
// steps are open at once (one in flight whose rows all finished, a fresh one, the next one ahead).
import { serveFail } from "./errors.ts";
import type { DecodeRow, GreedySteps, StepTicket } from "./step.ts";

interface InFlight {
  readonly ticket: StepTicket;
  /** The rows as the next call must pass them (token = this call's result, position + 1). */
  readonly rows: readonly DecodeRow[];
  readonly index: ReadonlyMap<string, number>;
}

export class DecodeAhead {
  private flight: InFlight | null = null;
  /** Sequences whose cache holds a step decoded ahead and then dropped (a broken contract, flush): one row more than
   *  their callers know, so they may not decode again. */
  private readonly dropped = new Set<string>();
  /** Steps served by a step already in flight (benchmarks, tests). */
  readonly stats = { launched: 0, ahead: 0, served: 0, mixed: 0 };

  /** alive(seq): whether the sequence still holds its cache (a released one may be left out of the next call). */
  constructor(private readonly g: GreedySteps, private readonly alive: (seq: string) => boolean) {}

  /** Greedy tokens of one decode step of `batch`; ahead: also enqueue the following step of the same rows. */
  decode(batch: readonly DecodeRow[], ahead: boolean): number[] {
    for (const s of this.dropped) if (!this.alive(s)) this.dropped.delete(s);
    const stale = batch.find((r) => this.dropped.has(r.seq));
    if (stale) serveFail("ZV7040", [`decode ahead: ${stale.seq} holds a step decoded ahead and dropped; release it`]);
    const f = this.flight;
    this.flight = null;
    const out = new Array<number>(batch.length).fill(-1);
    const covered: number[] = [];
    const rest: number[] = [];
    if (f) {
      const inBatch = new Set<string>();
      batch.forEach((r, i) => {
        inBatch.add(r.seq);
        const j = f.index.get(r.seq);
        if (j === undefined) return void rest.push(i);
        const want = f.rows[j]!;
        if (want.position !== r.position || want.token !== r.token) {
          this.drop(f);
          serveFail("ZV7040", [`decode ahead: ${r.seq} was decoded ahead at position ${want.position} from token ${want.token}, now asked at ${r.position} from ${r.token}`]);
        }
        covered.push(i);
      });
      const left = f.rows.find((r) => !inBatch.has(r.seq) && this.alive(r.seq));
      if (left) {
        this.drop(f);
        serveFail("ZV7040", [`decode ahead: ${left.seq} was decoded ahead but left out of the next step while it holds its cache`]);
      }
    } else batch.forEach((_, i) => rest.push(i));

    const fresh = rest.length > 0 ? this.g.launch(rest.map((i) => batch[i]!), false) : null;
    if (fresh) this.stats.launched++;
    // One step over exactly these rows in this order was the last launch: the next may read its ids on the device.
    const one = fresh ? rest.length === batch.length : f !== null && f.rows.length === batch.length && batch.every((r, i) => f.rows[i]!.seq === r.seq);
    let next: StepTicket | null = null;
    if (ahead && one && batch.length > 0 && this.g.deviceIds) {
      next = this.g.launch(batch.map((r) => ({ seq: r.seq, token: -1, position: r.position + 1 })), true);
      this.stats.ahead++;
    }
    if (f) {
      const t = this.g.collect(f.ticket);
      for (const i of covered) out[i] = t[f.index.get(batch[i]!.seq)!]!;
      this.stats.served += covered.length > 0 ? 1 : 0;
      this.stats.mixed += covered.length > 0 && fresh ? 1 : 0;
    }
    if (fresh) {
      const t = this.g.collect(fresh);
      rest.forEach((i, k) => (out[i] = t[k]!));
    }
    if (next) {
      const rows = batch.map((r, i) => ({ seq: r.seq, token: out[i]!, position: r.position + 1 }));
      this.flight = { ticket: next, rows, index: new Map(rows.map((r, i) => [r.seq, i])) };
    }
    return out;
  }

  /** Waits for a step in flight and drops it (disposal; its live sequences may not decode again). */
  flush(): void {
    if (this.flight) this.drop(this.flight);
    this.flight = null;
  }

  private drop(f: InFlight): void {
    this.g.collect(f.ticket);
    for (const r of f.rows) if (this.alive(r.seq)) this.dropped.add(r.seq);
  }
}
