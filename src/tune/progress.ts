// A progress bar with an ETA on stderr: redrawn in place on a terminal, one line per 10% (or per 15 s) otherwise.
export interface Progress {
  tick(label: string): void;
  /** Adds work discovered late (or removes work skipped for the budget). */
  total(n: number): void;
  done(): void;
}

export const fmtDuration = (s: number): string => (!Number.isFinite(s) ? "?" : s >= 60 ? `${Math.floor(s / 60)}m${String(Math.round(s % 60)).padStart(2, "0")}s` : `${s.toFixed(0)}s`);

export function progress(what: string, total: number, write: (s: string) => void = (s) => void process.stderr.write(s), tty = process.stderr.isTTY === true, now = () => performance.now()): Progress {
  const t0 = now();
  let done = 0;
  let lastPct = -1;
  let lastAt = t0;
  const line = (label: string): string => {
    const frac = total > 0 ? Math.min(1, done / total) : 1;
    const el = (now() - t0) / 1000;
    const eta = done > 0 ? (el / done) * (total - done) : Infinity;
    const bar = "#".repeat(Math.round(24 * frac)).padEnd(24, ".");
    return `${what} [${bar}] ${done}/${total} ${(100 * frac).toFixed(0)}% elapsed ${fmtDuration(el)} ETA ${fmtDuration(eta)} ${label}`;
  };
  return {
    tick(label) {
      done++;
      const pct = Math.floor((10 * done) / Math.max(1, total));
      if (tty) write(`\r${line(label).slice(0, 150).padEnd(150)}`);
      else if (pct !== lastPct || now() - lastAt > 15_000 || done === total) {
        write(line(label) + "\n");
        lastPct = pct;
        lastAt = now();
      }
    },
    total(n) {
      total = n;
    },
    done() {
      if (tty) write("\n");
    },
  };
}
