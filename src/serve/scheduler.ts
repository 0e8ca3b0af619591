// The serving scheduler: requests join and leave between decode steps. One tick = (admission, at most one prefill,
// one batched decode step over every live sequence), then the event loop runs (HTTP accepts, cancellations)
// before the next tick. Each sequence decodes at its own ORIGINAL position (prompt length + tokens generated
// before it), whatever its pruned caches hold. Greedy decoding, so a request's answer does not depend on what it
// was batched with.
//
// Admission: a request is checked by the planner when it arrives (impossible ones fail at once), waits in a
// bounded queue (full: ZV7024), and starts its prefill once the pool's unreserved pages cover its expected pages
// (or nothing else is running). After prefill the pages its remaining new tokens can take are reserved, so a live
// sequence never runs out of pages mid-decode. A prefill that still runs out (its real kept count beat the
// expected ratio) is undone and waits for running sequences to finish; alone, it fails with ZV7011.
import { ServeError } from "./errors.ts";
import { checkRequest, expectedPages, type MemoryPlan } from "./planner.ts";
import type { PagedKvPool } from "./pool.ts";

export interface LayerStat {
  readonly layer: number;
  readonly kept: number;
  readonly n: number;
}

/** What the scheduler drives: a model that prefills into the pool and decodes a batch from it. */
export interface Engine<P> {
  readonly plan: MemoryPlan;
  readonly pool: PagedKvPool;
  /** Prefill of one prompt into the pool under `seq` (the scheduler added it); returns the first new token. */
  prefill(seq: string, prepared: P): { readonly first: number; readonly layers: readonly LayerStat[] };
  /** One decode step: feeds each sequence's token at its position, appends its K/V, returns the next tokens. ahead:
   *  the same sequences decode again next unless some finish (no admission is pending): an engine may keep that
   *  step in flight meanwhile. */
  decode(batch: readonly { readonly seq: string; readonly token: number; readonly position: number }[], opts?: { ahead?: boolean }): number[];
}

export interface SubmitOptions {
  readonly promptTokens: number;
  readonly maxTokens: number;
  readonly stop: readonly number[];
  readonly timeoutMs: number;
  /** Called with every new token as soon as it exists. */
  readonly onToken?: (token: number) => void;
}

export interface Completion {
  readonly tokens: number[];
  readonly finish: "stop" | "length";
  readonly promptTokens: number;
  readonly layers: readonly LayerStat[];
  readonly queueMs: number;
  readonly prefillMs: number;
  readonly decodeMs: number;
  readonly decodeSteps: number;
  /** Largest batch this request was decoded in. */
  readonly maxBatch: number;
}

export interface Ticket {
  readonly id: string;
  readonly done: Promise<Completion>;
  cancel(reason: string): void;
}

interface Job<P> {
  readonly id: string;
  readonly prepared: P;
  readonly o: SubmitOptions;
  readonly stop: ReadonlySet<number>;
  readonly enqueued: number;
  readonly deadline: number;
  readonly resolve: (c: Completion) => void;
  readonly reject: (e: ServeError) => void;
  state: "queued" | "live" | "done";
  tokens: number[];
  layers: readonly LayerStat[];
  prefillStart: number;
  prefillMs: number;
  decodeMs: number;
  decodeSteps: number;
  maxBatch: number;
  cancelled: string | null;
}

export interface SchedulerOptions {
  readonly maxBatch: number;
  readonly maxQueue: number;
  /** Called after every tick (tests, metrics). */
  readonly onTick?: (s: { live: number; queued: number; batch: number }) => void;
}

export class Scheduler<P> {
  private readonly queue: Job<P>[] = [];
  private readonly live: Job<P>[] = [];
  private next = 0;
  private ticking = false;
  private closing = false;
  private idleWaiters: (() => void)[] = [];
  /** Decode steps run and the batch size of each (metrics). */
  readonly stats = { steps: 0, tokens: 0, prefills: 0, maxBatch: 0 };

  constructor(readonly engine: Engine<P>, readonly opts: SchedulerOptions) {}

  get queued(): number {
    return this.queue.length;
  }
  get running(): number {
    return this.live.length;
  }

  /** Checks the request against the plan and queues it; throws a coded ServeError when it cannot be taken. */
  submit(prepared: P, o: SubmitOptions): Ticket {
    if (this.closing) throw new ServeError("ZV7028");
    checkRequest(this.engine.plan, o.promptTokens, o.maxTokens);
    if (this.queue.length >= this.opts.maxQueue) throw new ServeError("ZV7024", [this.queue.length]);
    const id = `seq-${++this.next}`;
    let resolve!: (c: Completion) => void;
    let reject!: (e: ServeError) => void;
    const done = new Promise<Completion>((res, rej) => ((resolve = res), (reject = rej)));
    const now = performance.now();
    const job: Job<P> = {
      id, prepared, o, stop: new Set(o.stop), enqueued: now, deadline: now + o.timeoutMs, resolve, reject,
      state: "queued", tokens: [], layers: [], prefillStart: 0, prefillMs: 0, decodeMs: 0, decodeSteps: 0, maxBatch: 0, cancelled: null,
    };
    this.queue.push(job);
    this.kick();
    return {
      id,
      done,
      cancel: (reason) => {
        if (job.state === "done") return;
        job.cancelled = reason;
        this.kick();
      },
    };
  }

  /** Stops taking requests, fails the queued ones (ZV7028) and resolves once the running ones are done. */
  async close(): Promise<void> {
    this.closing = true;
    for (const j of this.queue.splice(0)) this.finish(j, new ServeError("ZV7028"));
    if (this.live.length === 0 && !this.ticking) return;
    await new Promise<void>((res) => this.idleWaiters.push(res));
  }

  private kick(): void {
    if (this.ticking) return;
    this.ticking = true;
    setImmediate(() => this.tick());
  }

  private tick(): void {
    try {
      this.expire();
      this.admit();
      this.step();
    } finally {
      this.ticking = false;
      this.opts.onTick?.({ live: this.live.length, queued: this.queue.length, batch: this.live.length });
      if (this.queue.length || this.live.length) this.kick();
      else for (const w of this.idleWaiters.splice(0)) w();
    }
  }

  private finish(j: Job<P>, e?: ServeError): void {
    if (j.state === "done") return;
    const wasLive = j.state === "live";
    j.state = "done";
    if (wasLive) {
      this.live.splice(this.live.indexOf(j), 1);
      this.engine.pool.release(j.id);
    } else {
      const qi = this.queue.indexOf(j);
      if (qi >= 0) this.queue.splice(qi, 1);
    }
    if (e) return j.reject(e);
    const last = j.tokens[j.tokens.length - 1];
    j.resolve({
      tokens: j.tokens, finish: last !== undefined && j.stop.has(last) ? "stop" : "length", promptTokens: j.o.promptTokens, layers: j.layers,
      queueMs: j.prefillStart - j.enqueued, prefillMs: j.prefillMs, decodeMs: j.decodeMs, decodeSteps: j.decodeSteps, maxBatch: j.maxBatch,
    });
  }

  /** Timeouts and cancellations, checked between steps. */
  private expire(): void {
    const now = performance.now();
    for (const j of [...this.queue, ...this.live]) {
      if (j.cancelled !== null) this.finish(j, new ServeError("ZV7027", [j.cancelled]));
      else if (now > j.deadline) {
        this.finish(j, j.state === "queued" ? new ServeError("ZV7025", [j.o.timeoutMs]) : new ServeError("ZV7026", [j.o.timeoutMs, j.tokens.length]));
      }
    }
  }

  /** At most one prefill per tick, so running sequences keep decoding while a queue drains. */
  private admit(): void {
    const j = this.queue[0];
    if (!j || this.live.length >= this.opts.maxBatch) return;
    const pool = this.engine.pool;
    if (this.live.length > 0 && expectedPages(this.engine.plan, j.o.promptTokens, j.o.maxTokens) > pool.availablePages) return;
    this.queue.shift();
    j.prefillStart = performance.now();
    pool.addSequence(j.id);
    let first: number;
    try {
      const r = this.engine.prefill(j.id, j.prepared);
      first = r.first;
      j.layers = r.layers;
      // The pages its remaining new tokens may take stay reserved until it ends.
      let growth = 0;
      for (let l = 0; l < this.engine.plan.shape.layers; l++) growth += pool.growthPages(j.id, l, pool.lengths(j.id, l).map(() => Math.max(0, j.o.maxTokens - 1)));
      pool.reserve(j.id, growth);
    } catch (e) {
      pool.release(j.id);
      if (e instanceof ServeError && e.code === "ZV7002") {
        if (this.live.length > 0) {
          this.queue.unshift(j); // retry once running sequences have freed their pages
          return;
        }
        j.state = "done";
        return j.reject(new ServeError("ZV7011", [j.o.promptTokens, `its pruned KV cache does not fit the pool even alone (${e.message})`]));
      }
      j.state = "done";
      return j.reject(e instanceof ServeError ? e : new ServeError("ZV7040", [e instanceof Error ? e.message : String(e)], { cause: e }));
    }
    j.prefillMs = performance.now() - j.prefillStart;
    this.stats.prefills++;
    j.state = "live";
    this.live.push(j);
    this.emit(j, first);
  }

  private emit(j: Job<P>, token: number): void {
    j.tokens.push(token);
    this.stats.tokens++;
    j.o.onToken?.(token);
    if (j.stop.has(token) || j.tokens.length >= j.o.maxTokens) this.finish(j);
  }

  private step(): void {
    if (this.live.length === 0) return;
    const batch = [...this.live];
    const t0 = performance.now();
    let next: number[];
    try {
      // The next step is this batch again unless a request waits for admission or one reaches its token limit now.
      const ahead = this.queue.length === 0 && batch.every((j) => j.tokens.length + 1 < j.o.maxTokens);
      next = this.engine.decode(batch.map((j) => ({ seq: j.id, token: j.tokens[j.tokens.length - 1]!, position: j.o.promptTokens + j.tokens.length - 1 })), { ahead });
    } catch (e) {
      const err = e instanceof ServeError ? e : new ServeError("ZV7040", [e instanceof Error ? e.message : String(e)], { cause: e });
      for (const j of batch) this.finish(j, err);
      return;
    }
    const ms = performance.now() - t0;
    this.stats.steps++;
    this.stats.maxBatch = Math.max(this.stats.maxBatch, batch.length);
    batch.forEach((j, i) => {
      j.decodeMs += ms;
      j.decodeSteps++;
      j.maxBatch = Math.max(j.maxBatch, batch.length);
      this.emit(j, next[i]!);
    });
  }
}
