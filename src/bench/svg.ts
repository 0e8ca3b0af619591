// A small SVG line-chart writer (no dependencies): linear or log axes with ticks, axis labels, a title, a legend,
// one polyline with point markers per series.
export interface Series {
  readonly name: string;
  readonly points: readonly (readonly [number, number])[];
}
export interface Chart {
  readonly title: string;
  readonly x: { readonly label: string; readonly log?: boolean };
  readonly y: { readonly label: string; readonly log?: boolean; readonly zero?: boolean };
  readonly series: readonly Series[];
}

const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];
const W = 720;
const H = 440;
const M = { l: 70, r: 190, t: 40, b: 56 };
const esc = (s: string): string => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
const fmt = (v: number): string => (Math.abs(v) >= 1000 ? `${+(v / 1000).toPrecision(3)}k` : String(+v.toPrecision(3)));

function ticks(lo: number, hi: number, log: boolean): number[] {
  if (log) {
    const out: number[] = [];
    for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) for (const m of [1, 2, 5]) {
      const v = m * 10 ** e;
      if (v >= lo * 0.999 && v <= hi * 1.001) out.push(v);
    }
    return out.length >= 2 ? out : [lo, hi];
  }
  const step0 = (hi - lo) / 5;
  const mag = 10 ** Math.floor(Math.log10(step0 || 1));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= step0) ?? step0;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toPrecision(12));
  return out;
}

/** The chart as a standalone SVG document. Series without finite points are listed in the legend as "(no data)". */
export function renderChart(c: Chart): string {
  const pts = c.series.flatMap((s) => s.points).filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y) && (!c.x.log || x > 0) && (!c.y.log || y > 0));
  const xs = pts.map((p) => p[0]);
  const ys = pts.map((p) => p[1]);
  let [x0, x1] = xs.length ? [Math.min(...xs), Math.max(...xs)] : [1, 10];
  let [y0, y1] = ys.length ? [Math.min(...ys), Math.max(...ys)] : [1, 10];
  if (c.y.zero && !c.y.log) y0 = Math.min(0, y0);
  if (x0 === x1) [x0, x1] = [x0 * 0.9 || -1, x1 * 1.1 || 1];
  if (y0 === y1) [y0, y1] = [y0 * 0.9 || -1, y1 * 1.1 || 1];
  if (c.y.log) [y0, y1] = [y0 / 1.15, y1 * 1.15];
  else y1 += (y1 - y0) * 0.05;
  const tx = (v: number): number => c.x.log ? (Math.log(v / x0) / Math.log(x1 / x0)) : (v - x0) / (x1 - x0);
  const ty = (v: number): number => c.y.log ? (Math.log(v / y0) / Math.log(y1 / y0)) : (v - y0) / (y1 - y0);
  const pw = W - M.l - M.r;
  const ph = H - M.t - M.b;
  const X = (v: number): number => +(M.l + tx(v) * pw).toFixed(1);
  const Y = (v: number): number => +(M.t + ph - ty(v) * ph).toFixed(1);
  const o: string[] = [];
  o.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`);
  o.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  o.push(`<text x="${M.l + pw / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">${esc(c.title)}</text>`);
  for (const v of ticks(x0, x1, c.x.log === true)) {
    o.push(`<line x1="${X(v)}" y1="${M.t}" x2="${X(v)}" y2="${M.t + ph}" stroke="#e5e5e5"/>`);
    o.push(`<text x="${X(v)}" y="${M.t + ph + 16}" text-anchor="middle">${fmt(v)}</text>`);
  }
  for (const v of ticks(y0, y1, c.y.log === true)) {
    o.push(`<line x1="${M.l}" y1="${Y(v)}" x2="${M.l + pw}" y2="${Y(v)}" stroke="#e5e5e5"/>`);
    o.push(`<text x="${M.l - 6}" y="${Y(v) + 4}" text-anchor="end">${fmt(v)}</text>`);
  }
  o.push(`<rect x="${M.l}" y="${M.t}" width="${pw}" height="${ph}" fill="none" stroke="#333"/>`);
  o.push(`<text x="${M.l + pw / 2}" y="${H - 14}" text-anchor="middle">${esc(c.x.label)}${c.x.log ? " (log)" : ""}</text>`);
  o.push(`<text transform="translate(18 ${M.t + ph / 2}) rotate(-90)" text-anchor="middle">${esc(c.y.label)}${c.y.log ? " (log)" : ""}</text>`);
  c.series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length]!;
    const p = s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y) && (!c.x.log || x > 0) && (!c.y.log || y > 0)).slice().sort((a, b) => a[0] - b[0]);
    if (p.length > 1) o.push(`<polyline fill="none" stroke="${color}" stroke-width="2" points="${p.map(([x, y]) => `${X(x)},${Y(y)}`).join(" ")}"/>`);
    for (const [x, y] of p) o.push(`<circle cx="${X(x)}" cy="${Y(y)}" r="3.5" fill="${color}"><title>${esc(s.name)}: ${fmt(x)}, ${fmt(y)}</title></circle>`);
    const ly = M.t + 10 + 20 * i;
    o.push(`<line x1="${M.l + pw + 14}" y1="${ly}" x2="${M.l + pw + 38}" y2="${ly}" stroke="${color}" stroke-width="2"/>`);
    o.push(`<text x="${M.l + pw + 44}" y="${ly + 4}">${esc(s.name)}${p.length ? "" : " (no data)"}</text>`);
  });
  o.push("</svg>");
  return o.join("\n") + "\n";
}
