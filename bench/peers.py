#!/usr/bin/env python3
"""PyTorch peers for zipvl's benchmarks (one GPU, bf16, batch 1, H=40 heads, head_dim 128).

  python3 bench/peers.py --out OUT.json [--quick] [--sweep | --no-sweep] [--no-flex] [--iters N]
                         [--json] [--ns 2880,8192] [--d 128] [--heads 40] [--kv-heads 40]

--json prints the final JSON document as the last line of stdout (progress goes to stderr): `zipvl bench` runs
this script as a child process that way. --kv-heads < --heads is grouped-query attention (enable_gqa=True).

Measures dense causal prefill (SDPA flash, SDPA cuDNN, FlexAttention), ZipVL's reference path (eager PyTorch
probe scoring + sort/top-k selection + gather + SDPA + scatter), decode over a pruned cache, and the card's copy
bandwidth and bf16 matmul floors. See bench/README.md for the JSON schema. Every measurement is guarded: an error
or OOM is recorded in that row's note and the run goes on. The JSON is rewritten after every section.
"""
import argparse
import gc
import itertools
import json
import math
import os
import statistics
import sys
import time
import warnings

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

H, D = 40, 128                   # query heads and head dim (--heads, --d)
HKV = H                          # KV heads (--kv-heads; GQA when < H)
RECENT, RANDOM = 64, 64          # probe queries: last 64 positions + 64 random earlier ones
TAU = 0.975
L2_BYTES = 50 * 2**20            # H100 L2; decode rotates cache copies so each read comes from HBM
BF16 = torch.bfloat16
BACKENDS = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
            "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}
FLOPS_FORMULA = "causal attention FLOPs = 4 * H * d * n * (n + 1) / 2 (QK^T and PV, 2 FLOPs per MAC, causal half)"

RESULTS, FLOORS, ARGS, _FLEX = [], {}, None, None      # rows, floors, CLI args, compiled flex_attention


def causal_flops(n):
    return 4 * H * D * n * (n + 1) / 2


def tf(flops, ms):
    return flops / ms / 1e9 if ms else None


def cleanup():
    gc.collect()
    torch.cuda.empty_cache()


def sdpa(be, *args, **kw):
    if HKV != H:
        kw["enable_gqa"] = True                 # K/V carry HKV heads, each shared by H // HKV query heads
    with sdpa_kernel([be]):                     # only this backend: raises "No available kernel" if unsupported
        return F.scaled_dot_product_attention(*args, **kw)


def log(*a):
    """Progress lines: stdout, or stderr under --json (stdout then carries only the JSON document)."""
    print(*a, file=sys.stderr if ARGS is not None and ARGS.json else sys.stdout, flush=True)


# ---------------------------------------------------------------------------------------------- timing
def _samples(launch, per):
    """Median (and min) over ARGS.iters samples of launch() between two CUDA events, divided by `per`."""
    ts = []
    for _ in range(ARGS.iters):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        s.record()
        launch()
        e.record()
        torch.cuda.synchronize()
        ts.append(s.elapsed_time(e) / per)
    return statistics.median(ts), min(ts)


def time_eager(fn, reps=1):
    """Each sample is `reps` back-to-back eager calls fn(i), i counting up (for buffer rotation)."""
    it = itertools.count()

    def run():
        for _ in range(reps):
            fn(next(it))
    for _ in range(ARGS.warmup):
        run()
    return _samples(run, reps)


def time_graph(fn, reps):
    """`reps` calls fn(0..reps-1) captured in one CUDA graph (no launch overhead); each sample is one replay."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for i in range(3):
            fn(i)
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for i in range(reps):
            fn(i)
    for _ in range(ARGS.warmup):
        g.replay()
    return _samples(g.replay, reps)


# ---------------------------------------------------------------------------------------------- results
def fmt(r):
    f = lambda x, p: "-" if x is None else f"{x:.{p}f}"
    n = "-" if r["n"] is None else r["n"]
    return (f"{r['kind']:<14} {r['impl']:<15} {n:>6} {f(r['kept'], 3):>6} {f(r['ms'], 4):>10} "
            f"{f(r['tflops'], 1):>7} {f(r['tbps'], 3):>7}  {r['note']}")


HEADER = f"{'kind':<14} {'impl':<15} {'n':>6} {'kept':>6} {'ms':>10} {'TFLOP/s':>7} {'TB/s':>7}  note"


def record(kind, impl, n, kept, ms=None, tflops=None, tbps=None, note="", **extra):
    row = {"kind": kind, "impl": impl, "n": n, "kept": kept, "ms": ms, "tflops": tflops, "tbps": tbps,
           "note": note, "extra": extra}
    RESULTS.append(row)
    log(fmt(row))
    return row


def attempt(kind, impl, n, kept, body):
    """Run body() -> dict of record() fields; on any exception record the error (and SDPA's warnings)."""
    r, msg = None, "error: no result"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            r = body()
        except Exception as e:  # noqa: BLE001 - never abort the run
            first = (str(e).strip().splitlines() or [""])[0]
            why = "; ".join(str(w.message).splitlines()[0] for w in caught[:3])
            tag = ("OOM" if isinstance(e, torch.cuda.OutOfMemoryError) else
                   "unsupported" if "No available kernel" in str(e) else "error")
            msg = f"{tag}: {type(e).__name__}: {first}" + (f" [warnings: {why}]" if why else "")
    if r is None:
        cleanup()
        return record(kind, impl, n, kept, note=msg[:400], error=True)
    r.setdefault("kept", kept)
    return record(kind, impl, n, **r)


def write_json(partial):
    doc = {
        "device": torch.cuda.get_device_name(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(), "partial": partial, "quick": ARGS.quick,
        "shapes": {"batch": 1, "H": H, "Hkv": HKV, "d": D, "dtype": "bfloat16"},
        "flops_formula": FLOPS_FORMULA,
        "timing": (f"CUDA events, {ARGS.warmup} warm-up calls, median of {ARGS.iters} timed samples "
                   "(synchronize around each); decode samples are reps back-to-back calls (eager) or one "
                   "CUDA-graph replay of reps calls, divided by reps"),
        "ref_path": {"probes": f"last {RECENT} + {RANDOM} random earlier positions (fresh each call)",
                     "scores": "bf16 matmul Q[P] K^T, then fp32 scale, causal mask on |P| rows, fp32 softmax",
                     "tau": TAU, "count": "sort desc + cumsum + searchsorted (computed in every call); "
                     "ratio mode then overrides p = ceil(kept * n)",
                     "normalizer": "s_j = a_j / nnz_j, nnz_j = probe rows that see key j",
                     "tflops": "attention FLOPs on the kept tokens (causal_flops(p)) / time; "
                               "extra.dense_equiv_tflops = causal_flops(n) / time"},
        "results": RESULTS, "floors": FLOORS, "wall_s": round(time.perf_counter() - T0, 1),
    }
    os.makedirs(os.path.dirname(os.path.abspath(ARGS.out)), exist_ok=True)
    with open(ARGS.out, "w") as f:
        json.dump(doc, f, indent=1)


def qkv(n, count=3):
    return [torch.randn(1, H if i == 0 else HKV, n, D, dtype=BF16, device="cuda") for i in range(count)]


def setup(kind, n, kept, make):
    """make() -> inputs, or None after recording why (e.g. OOM at n = 65536)."""
    try:
        return make()
    except Exception as e:  # noqa: BLE001
        cleanup()
        record(kind, "setup", n, kept, note=f"setup failed: {type(e).__name__}: {e}"[:300], error=True)
        return None


# ---------------------------------------------------------------------------------------------- sections
def section_floors():
    def copy():
        numel = 2**30 // 2                      # 1 GiB of bf16
        src = torch.empty(numel, dtype=BF16, device="cuda").fill_(1.0)
        dst = torch.empty_like(src)
        ms, ms_min = time_eager(lambda i: dst.copy_(src))
        tbps = 2 * 2**30 / (ms * 1e-3) / 1e12
        FLOORS.update(copy_bytes_read_plus_written=2 * 2**30, copy_ms=ms, copy_tbps=tbps)
        return {"ms": ms, "tbps": tbps, "note": "1 GiB D2D copy_, bytes read+written / time", "ms_min": ms_min}

    def matmul():
        a, b = (torch.randn(8192, 8192, dtype=BF16, device="cuda") for _ in range(2))
        c = torch.empty_like(a)
        ms, ms_min = time_eager(lambda i: torch.matmul(a, b, out=c))
        t = tf(2 * 8192**3, ms)
        FLOORS.update(matmul_ms=ms, matmul_tflops=t, matmul_shape="8192^3 bf16")
        return {"ms": ms, "tflops": t, "note": "torch.matmul 8192^3 bf16", "ms_min": ms_min}

    attempt("floor", "copy", None, None, copy)
    attempt("floor", "matmul", None, None, matmul)
    cleanup()


def _causal(b, h, q_idx, kv_idx):
    return q_idx >= kv_idx


def flex_body(q, k, v, n):
    global _FLEX
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    if _FLEX is None:
        _FLEX = torch.compile(flex_attention, dynamic=False)
    t0 = time.perf_counter()
    try:                                        # plain create_block_mask materializes an n x n bool mask
        bm = create_block_mask(_causal, None, None, n, n, device="cuda")
    except torch.cuda.OutOfMemoryError:
        cleanup()
        bm = torch.compile(create_block_mask)(_causal, None, None, n, n, device="cuda")
    torch.cuda.synchronize()
    t1 = time.perf_counter()
    gqa = {"enable_gqa": True} if HKV != H else {}
    _FLEX(q, k, v, block_mask=bm, **gqa)        # compile (excluded from timing)
    torch.cuda.synchronize()
    t2 = time.perf_counter()
    ms, ms_min = time_eager(lambda i: _FLEX(q, k, v, block_mask=bm, **gqa))
    return {"ms": ms, "tflops": tf(causal_flops(n), ms), "note": f"compile {t2 - t1:.1f}s excluded",
            "ms_min": ms_min, "compile_s": t2 - t1, "block_mask_s": t1 - t0}


def section_dense(ns):
    for n in ns:
        if (t := setup("dense_prefill", n, 1.0, lambda: qkv(n))) is None:
            continue
        q, k, v = t
        for name in ("flash", "cudnn"):
            def body(be=BACKENDS[name]):
                ms, ms_min = time_eager(lambda i: sdpa(be, q, k, v, is_causal=True))
                return {"ms": ms, "tflops": tf(causal_flops(n), ms), "ms_min": ms_min}
            attempt("dense_prefill", "sdpa_" + name, n, 1.0, body)
        if not ARGS.no_flex:
            attempt("dense_prefill", "flex", n, 1.0, lambda: flex_body(q, k, v, n))
        del q, k, v, t
        cleanup()


# ZipVL reference path ("eager PyTorch around stock FlashAttention")
def ref_select(q, k, n, p, gen, tau_mode=False):
    """Probe scoring + adaptive count + normalized top-p. Returns (T sorted int64 [p], p_tau tensor [1])."""
    dev = q.device
    rnd = torch.randperm(n - RECENT, device=dev, generator=gen)[:RANDOM]
    P = torch.cat([rnd, torch.arange(n - RECENT, n, device=dev)])          # [|P|]
    hidden = torch.arange(n, device=dev)[None, :] > P[:, None]              # [|P|, n] causal, probe rows only
    if HKV != H:                                                            # GQA: each KV head serves H // HKV
        k = k.repeat_interleave(H // HKV, dim=1)
    S = torch.matmul(q.index_select(2, P), k.transpose(-1, -2)).float()    # [1, H, |P|, n]
    S.mul_(1.0 / math.sqrt(D)).masked_fill_(hidden, float("-inf"))
    A = torch.softmax(S, dim=-1)
    a = A.sum(dim=(0, 1, 2))                                                # [n] raw column mass
    c = torch.cumsum(torch.sort(a, descending=True).values, 0)
    p_tau = (torch.searchsorted(c, c[-1:] * TAU) + 1).clamp_(max=n)
    if tau_mode:
        p = int(p_tau.item())
    nnz = (~hidden).sum(0)                                                  # probe rows that see key j (>= 1)
    s = a / nnz
    T = torch.sort(torch.topk(s, p).indices).values
    return T, p_tau


def ref_attend(q, k, v, T, be):
    """Gather the kept tokens, causal SDPA on the compacted sequence, scatter into a zero [1,H,n,d] output."""
    qt, kt, vt = (x.index_select(2, T) for x in (q, k, v))
    ot = sdpa(be, qt, kt, vt, is_causal=True)
    o = torch.zeros_like(q)
    o.index_copy_(2, T, ot)
    return o, kt, vt                                                         # kt, vt: the pruned KV cache


def kept_count(ratio, n):
    return max(1, min(n, math.ceil(ratio * n - 1e-9)))


def ref_step_body(q, k, v, n, p, gen, name):
    be = BACKENDS[name]
    ms, ms_min = time_eager(lambda i: ref_attend(q, k, v, ref_select(q, k, n, p, gen)[0], be))
    return {"ms": ms, "tflops": tf(causal_flops(p), ms), "ms_min": ms_min, "p": p,
            "dense_equiv_tflops": tf(causal_flops(n), ms), "note": "full step: probe+select+gather+SDPA+scatter"}


def section_ref(ns, ratio, sweep):
    gen = torch.Generator(device="cuda")
    gen.manual_seed(0)
    for n in ns:
        p = kept_count(ratio, n)
        kept = p / n
        if (t := setup("ref_select", n, kept, lambda: qkv(n))) is None:
            continue
        q, k, v = t

        def sel():
            T, p_tau = ref_select(q, k, n, p, gen, tau_mode=True)            # untimed: tau count on this data
            tau_p = int(p_tau.item())
            ms, ms_min = time_eager(lambda i: ref_select(q, k, n, p, gen))
            probe_flops = 2 * H * (RECENT + RANDOM) * n * D * 2              # QK^T over |P| rows (2 FLOP/MAC)
            return {"ms": ms, "tflops": tf(probe_flops, ms), "ms_min": ms_min, "p": p, "tau_p": tau_p,
                    "note": f"probe+select, ratio mode; tau={TAU} on random data keeps {tau_p / n:.3f}"}
        attempt("ref_select", "eager", n, kept, sel)
        if (T := setup("ref_attn", n, kept, lambda: ref_select(q, k, n, p, gen)[0])) is None:
            del q, k, v, t
            continue
        for name in ("flash", "cudnn"):
            def attn(be=BACKENDS[name]):
                ms, ms_min = time_eager(lambda i: ref_attend(q, k, v, T, be))
                return {"ms": ms, "tflops": tf(causal_flops(p), ms), "ms_min": ms_min, "p": p,
                        "note": "gather + SDPA causal on kept + scatter"}
            attempt("ref_attn", name, n, kept, attn)
            attempt("ref_step", name, n, kept, lambda name=name: ref_step_body(q, k, v, n, p, gen, name))
        if sweep and n in (8192, 32768):
            for r in (0.1, 0.5, 0.7):
                pr = kept_count(r, n)
                for name in ("flash", "cudnn"):
                    attempt("ref_step", name, n, pr / n,
                            lambda name=name, pr=pr: ref_step_body(q, k, v, n, pr, gen, name))
        del q, k, v, t, T
        cleanup()


def section_decode(ns):
    for n in ns:
        for frac in (0.3, 1.0):
            L = round(frac * n)
            kv_bytes = 2 * HKV * L * D * 2                                   # K + V, bf16
            nbuf = max(1, min(32, math.ceil(4 * L2_BYTES / kv_bytes)))       # rotate copies past the L2
            reps = max(nbuf, min(200, math.ceil(1e-3 / (kv_bytes / 3e12))))
            shapes = ((1, H, 1, D), (nbuf, 1, HKV, L, D), (nbuf, 1, HKV, L, D))
            if (t := setup("decode", n, L / n, lambda: [torch.randn(*sh, dtype=BF16, device="cuda")
                                                        for sh in shapes])) is None:
                continue
            q, kb, vb = t
            for name in ("flash", "efficient", "cudnn", "math"):
                def body(name=name, be=BACKENDS[name]):
                    f = lambda i: sdpa(be, q, kb[i % nbuf], vb[i % nbuf])          # no mask: q sees the whole cache
                    ms_eager, _ = time_eager(f, reps)
                    try:
                        ms, ms_min = time_graph(f, reps)
                        how = "CUDA graph"
                    except Exception as e:  # noqa: BLE001
                        ms, ms_min, how = ms_eager, None, f"eager (graph failed: {type(e).__name__})"
                    torch.cuda.synchronize()
                    return {"ms": ms, "tbps": kv_bytes / (ms * 1e-3) / 1e12, "ms_min": ms_min,
                            "ms_eager": ms_eager, "L": L, "kv_bytes": kv_bytes, "backend_ran": name,
                            "note": f"L={L} {how}; eager {ms_eager * 1e3:.1f}us/call"}
                attempt("decode", "sdpa_" + name, n, L / n, body)
            del q, kb, vb, t
            cleanup()


def main():
    global ARGS, T0, H, HKV, D
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="peers.json", help="JSON output path")
    ap.add_argument("--quick", action="store_true", help="n in {2880, 8192, 32768}; no kept-ratio sweep")
    ap.add_argument("--sweep", dest="sweep", action="store_true", default=None,
                    help="kept ratios 0.1/0.5/0.7 for the full ref step at n=8192, 32768 (default: on unless --quick)")
    ap.add_argument("--no-sweep", dest="sweep", action="store_false")
    ap.add_argument("--no-flex", action="store_true", help="skip FlexAttention (torch.compile)")
    ap.add_argument("--ratio", type=float, default=0.3, help="kept ratio for the timed reference path")
    ap.add_argument("--iters", type=int, default=25, help="timed samples per measurement (>= 20)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--sections", default="floors,dense,ref,decode", help="comma list of sections to run")
    ap.add_argument("--json", action="store_true", help="print the final JSON document as stdout's last line")
    ap.add_argument("--ns", default=None, help="comma list of n (default 2880,8192,32768 and 65536 unless --quick)")
    ap.add_argument("--d", type=int, default=128, help="head dim")
    ap.add_argument("--heads", type=int, default=40, help="query heads")
    ap.add_argument("--kv-heads", type=int, default=None, help="KV heads (default: --heads)")
    ARGS = ap.parse_args()
    H, D = ARGS.heads, ARGS.d
    HKV = ARGS.kv_heads or H
    if H % HKV:
        ap.error(f"--heads {H} must be a multiple of --kv-heads {HKV}")
    ARGS.iters = max(20, ARGS.iters)
    ARGS.warmup = max(1, ARGS.warmup)
    sweep = (not ARGS.quick) if ARGS.sweep is None else ARGS.sweep
    T0 = time.perf_counter()
    if not torch.cuda.is_available():
        print("no CUDA device", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    ns = ([int(x) for x in ARGS.ns.split(",")] if ARGS.ns else
          [2880, 8192, 32768] + ([] if ARGS.quick else [65536]))
    sections = [s.strip() for s in ARGS.sections.split(",") if s.strip()]
    log(f"# {torch.cuda.get_device_name()} torch {torch.__version__} cuda {torch.version.cuda} "
        f"cudnn {torch.backends.cudnn.version()}; H={H} Hkv={HKV} d={D} n={ns} sweep={sweep} iters={ARGS.iters}")
    log(HEADER)
    steps = {"floors": section_floors, "dense": lambda: section_dense(ns),
             "ref": lambda: section_ref(ns, ARGS.ratio, sweep), "decode": lambda: section_decode(ns)}
    for name in sections:
        t = time.perf_counter()
        log(f"# section {name}")
        try:
            steps[name]()
        except Exception as e:  # noqa: BLE001 - a section bug must not lose the other sections
            record("section", name, None, None, note=f"section failed: {type(e).__name__}: {e}"[:400], error=True)
            cleanup()
        log(f"# section {name} done in {time.perf_counter() - t:.1f}s")
        write_json(partial=True)
    write_json(partial=False)
    log(f"\n{HEADER}\n" + "\n".join(fmt(r) for r in RESULTS))
    log(f"# floors: {json.dumps(FLOORS)}\n# wrote {ARGS.out} in {time.perf_counter() - T0:.1f}s")
    if ARGS.json:
        with open(ARGS.out) as f:
            print(json.dumps(json.load(f)), flush=True)
    return 0


T0 = time.perf_counter()
if __name__ == "__main__":
    sys.exit(main())
