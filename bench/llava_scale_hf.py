#!/usr/bin/env python3
"""Transformers baseline for bench/llava-scale.ts: a LlamaForCausalLM of the LLaVA-Next-13B decoder's shape
(hidden 5120, 40 layers, 40 heads, intermediate 13824, vocab 32064, bf16), randomly initialized directly on the GPU
in bf16, prefill latency and greedy decode tokens/s at the same lengths. The brief's baseline is eager attention
(it materializes [heads, n, n] scores, so ~32k tokens may run out of memory: reported as OOM); sdpa is measured too.

Usage (GPU host): python3 bench/llava_scale_hf.py --out OUT/llava_scale_hf.json [--quick] [--layers N]
                  [--lengths 2900,32000] [--steps N] [--attn eager,sdpa]
"""
import argparse
import gc
import json
import sys
import time


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="llava_scale_hf.json")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--layers", type=int, default=None)
    ap.add_argument("--lengths", default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--attn", default="eager,sdpa")
    a = ap.parse_args()
    layers = a.layers or (8 if a.quick else 40)
    lengths = [int(x) for x in (a.lengths or ("2900" if a.quick else "2900,32000")).split(",")]
    steps = a.steps or (4 if a.quick else 16)

    try:
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM
    except ImportError as e:  # the host lacks the baseline's packages: say so instead of a traceback
        print(f"llava_scale_hf: cannot import torch/transformers ({e}); no baseline", file=sys.stderr)
        return 2

    dev = torch.device("cuda")
    rows = []
    for attn in a.attn.split(","):
        cfg = LlamaConfig(hidden_size=5120, intermediate_size=13824, num_hidden_layers=layers, num_attention_heads=40,
                          num_key_value_heads=40, vocab_size=32064, max_position_embeddings=32768 + 1024,
                          rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False)
        cfg._attn_implementation = attn
        torch.manual_seed(0)
        t0 = time.perf_counter()
        with torch.device(dev):
            model = LlamaForCausalLM._from_config(cfg, torch_dtype=torch.bfloat16)
        model.eval()
        torch.cuda.synchronize()
        params = sum(p.numel() for p in model.parameters())
        print(f"[{attn}] {params / 1e9:.2f} B params bf16 ({layers} layers) on {torch.cuda.get_device_name()} "
              f"initialized in {time.perf_counter() - t0:.1f} s", flush=True)

        def run(n: int, decode_steps: int):
            ids = (torch.arange(n, device=dev) * 7919 % 31000 + 3).unsqueeze(0)
            torch.cuda.synchronize()
            t = time.perf_counter()
            with torch.inference_mode():
                out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
                nxt = out.logits[:, -1].argmax(-1, keepdim=True)
                torch.cuda.synchronize()
                prefill_ms = (time.perf_counter() - t) * 1000
                pkv = out.past_key_values
                t = time.perf_counter()
                for _ in range(decode_steps):
                    out = model(input_ids=nxt, past_key_values=pkv, use_cache=True)
                    pkv = out.past_key_values
                    nxt = out.logits[:, -1].argmax(-1, keepdim=True)
                torch.cuda.synchronize()
                per = (time.perf_counter() - t) * 1000 / max(1, decode_steps)
            del out, pkv
            return prefill_ms, per

        run(256, 2)  # warm-up
        for n in lengths:
            try:
                pre, per = run(n, steps)
                rows.append({"attn": attn, "n": n, "prefill_ms": pre, "decode_ms_per_token": per, "tokens_per_s": 1000 / per,
                             "peak_gib": torch.cuda.max_memory_allocated() / 2**30})
                print(f"[{attn}] n {n:6d}  prefill {pre:8.0f} ms  decode {per:7.1f} ms/token ({1000 / per:.1f} tok/s)  "
                      f"peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB", flush=True)
            except torch.cuda.OutOfMemoryError:
                rows.append({"attn": attn, "n": n, "error": "OOM"})
                print(f"[{attn}] n {n:6d}  OOM", flush=True)
            gc.collect()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        del model
        gc.collect()
        torch.cuda.empty_cache()

    print("\n| attn | tokens | prefill ms | decode ms/token | tokens/s |\n|---|---:|---:|---:|---:|")
    for r in rows:
        if "error" in r:
            print(f"| {r['attn']} | {r['n']} | {r['error']} | | |")
        else:
            print(f"| {r['attn']} | {r['n']} | {r['prefill_ms']:.0f} | {r['decode_ms_per_token']:.1f} | {r['tokens_per_s']:.1f} |")
    with open(a.out, "w") as f:
        json.dump({"layers": layers, "steps": steps, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
