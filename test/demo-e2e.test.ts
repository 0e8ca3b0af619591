// End-to-end: builds the static demo (demo/build.mjs), serves it on 127.0.0.1 and opens it in headless Chromium
// (Debian's /usr/bin/chromium through playwright-core; WebGPU there is SwiftShader). The page runs the generated
// WGSL of one ZipVL layer and must reproduce the interpreter's selection and outputs.
// Without chromium, playwright-core or a WebGPU adapter the test is skipped with a console.warn, never passed silently.
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { tmpdir } from "node:os";
import { extname, join, normalize } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { buildDemo } from "../demo/build.mjs";

const CHROMIUM = process.env.ZIPVL_CHROMIUM ?? "/usr/bin/chromium";
const FLAGS = [
  "--enable-unsafe-webgpu", "--no-sandbox", "--disable-quic", "--no-first-run", "--disable-background-networking",
  "--disable-component-update", "--disable-sync", "--disable-gpu-sandbox",
  ...(process.env.ZIPVL_CHROMIUM_FLAGS ?? "").split(/\s+/).filter(Boolean), // e.g. "--use-angle=swiftshader"
];

/** The slice of playwright-core this test uses (it is a devDependency that may be absent). */
interface Page {
  on(event: "console" | "pageerror", f: (m: { text?: () => string; message?: string }) => void): void;
  goto(url: string): Promise<unknown>;
  waitForFunction(expr: string, arg: unknown, o: { timeout: number }): Promise<{ jsonValue(): Promise<unknown> }>;
  locator(sel: string): { textContent(): Promise<string | null> };
}
interface Context { newPage(): Promise<Page>; close(): Promise<void> }
interface Chromium { launchPersistentContext(dir: string, o: Record<string, unknown>): Promise<Context> }

async function loadChromium(): Promise<Chromium | string> {
  if (!existsSync(CHROMIUM)) return `${CHROMIUM} is missing (apt-get install chromium)`;
  try {
    const name = "playwright-core"; // not a static import: the package is optional for the rest of the suite
    const mod = (await import(name)) as { chromium: Chromium };
    return mod.chromium;
  } catch (e) {
    return `playwright-core is not installed (${(e as Error).message.split("\n")[0]})`;
  }
}

function serve(dir: string): Promise<{ server: Server; url: string }> {
  const types: Record<string, string> = { ".html": "text/html", ".js": "text/javascript", ".json": "application/json" };
  const server = createServer((req, res) => {
    const path = normalize(decodeURIComponent(new URL(req.url ?? "/", "http://x").pathname)).replace(/^(\.\.[/\\])+/, "");
    const file = join(dir, path === "/" ? "index.html" : path);
    if (!file.startsWith(dir) || !existsSync(file) || !types[extname(file)]) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "content-type": types[extname(file)]!, "cache-control": "no-store" }).end(readFileSync(file));
  });
  return new Promise((ok) => server.listen(0, "127.0.0.1", () => {
    const a = server.address();
    ok({ server, url: `http://127.0.0.1:${typeof a === "object" && a ? a.port : 0}/` });
  }));
}

interface PageResult {
  skip?: boolean; error?: string; ok?: boolean; count?: number; counts?: number[]; selected?: number[];
  maxErr?: number; errors?: Record<string, number>; ratio?: number; adapter?: string; ms?: Record<string, number>;
}

const chromium = await loadChromium();
if (typeof chromium === "string") console.warn(`\n[demo-e2e.test] SKIPPING the browser demo test: ${chromium}\n`);
const cleanup: (() => unknown)[] = [];
afterAll(async () => {
  for (const f of cleanup.reverse()) await f();
});

describe.skipIf(typeof chromium === "string")("demo page in headless Chromium", () => {
  it("runs one ZipVL layer's WGSL and matches the interpreter", async (ctx) => {
    const out = mkdtempSync(join(tmpdir(), "zipvl-demo-"));
    cleanup.push(() => rmSync(out, { recursive: true, force: true }));
    const { layer } = await buildDemo({ outDir: out });
    for (const f of ["index.html", "demo.js", "layer.json"]) expect(existsSync(join(out, f))).toBe(true);
    const { server, url } = await serve(out);
    cleanup.push(() => new Promise((r) => server.close(r)));

    const profile = mkdtempSync(join(tmpdir(), "zipvl-chromium-"));
    cleanup.push(() => rmSync(profile, { recursive: true, force: true }));
    const browser = await (chromium as Chromium).launchPersistentContext(profile, { executablePath: CHROMIUM, headless: true, args: FLAGS });
    cleanup.push(() => browser.close());
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on("pageerror", (e) => errors.push(e.message ?? ""));
    await page.goto(url);
    const handle = await page.waitForFunction("window.__zipvl", null, { timeout: 45_000 });
    const r = (await handle.jsonValue()) as PageResult;
    if (r.skip) {
      console.warn(`\n[demo-e2e.test] SKIPPING: Chromium has no WebGPU adapter (${r.error})\n`);
      ctx.skip();
      return;
    }
    expect(r.error, `page error: ${r.error}; log: ${await page.locator("#log").textContent()}`).toBeUndefined();
    expect(errors).toEqual([]);
    console.info(`[demo-e2e.test] ${r.adapter}: kept ${r.count}/${layer.dims.n} (ratio ${r.ratio}), max err ${r.maxErr} ` +
      `(o ${r.errors?.o}, scores ${r.errors?.scores}, norm_scores ${r.errors?.norm_scores}), ` +
      `pipelines ${Math.round(r.ms?.pipelines ?? 0)} ms, run ${Math.round(r.ms?.run ?? 0)} ms`);
    expect(r.counts).toEqual(layer.expected.count);
    expect(r.count).toBe(layer.expected.count[0]);
    expect(r.selected).toEqual(layer.expected.selected);
    expect(r.maxErr).toBeLessThan(1e-3);
    expect(r.ok).toBe(true);
    // The page shows the same numbers it reports.
    const shown = (await page.locator("#stats").textContent()) ?? "";
    expect(shown).toContain(`${r.count} of ${layer.dims.n}`);
    expect(shown).toContain((r.count! / layer.dims.n).toFixed(4));
  }, 60_000);
});
