#!/usr/bin/env python3
"""Reference outputs of transformers' LlavaNextForConditionalGeneration for zipvl's LLaVA-Next runtime.

  npx tsx -e 'import("./src/model/hf/index.ts").then(m => m.writeRandomLlavaNext("/tmp/llava-tiny", {seed: 0}))'
  python3 bench/llava_parity.py --dir /tmp/llava-tiny --out /tmp/llava-ref [--dtype f32|bf16] [--seed 0]
        [--new-tokens 16] [--image-size 90x50] [--device cuda|cpu] [--prompt "What is in the image?"]

DIR is a checkpoint written by zipvl's writer (src/model/hf/writer.ts). Its config.json is parsed by transformers
(LlavaNextConfig.from_pretrained: this checks that our config is read as we meant), a model of that config is
built with fixed-seed weights (N(0, 0.02); norm weights 1 + N(0, 0.02); biases N(0, 0.02), so every tensor
matters), cast to --dtype and written back with save_pretrained (config.json, model.safetensors,
generation_config.json: transformers' own layout). Our tokenizer, chat template and processor files stay. The
model is then reloaded from DIR (so the saved checkpoint is what ran), the processor (PIL backend when
available: Pillow resizes, which zipvl reproduces exactly) prepares a deterministic PNG written to OUT/image.png
and the chat-templated prompt, and OUT gets:

  ref.safetensors  input_ids i32 [1, T], attention_mask i32 [1, T], pixel_values f32 [1, P, 3, S, S],
                   image_sizes i32 [1, 2], logits f32 [T, V] (every position), last_logits f32 [V],
                   hidden_states.{0..L} f32 [T, H] (text model, embeddings first), generated_ids i32 [N]
  ref.json         versions, dtype, prompt, ids, image token count, greedy generation (N tokens, do_sample=False,
                   no EOS stop), tokenizer checks (ids of sample strings), processor class.
"""
import argparse
import json
import os
import re
import sys

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

import transformers
from transformers import AutoTokenizer, LlavaNextConfig, LlavaNextForConditionalGeneration, LlavaNextProcessor

NORM_WEIGHT = re.compile(r"(norm|layrnorm|layer_norm\d)\.weight$")
TOKENIZER_SAMPLES = ["hello world", "The image shows a cat.", " two  spaces\tand\nlines", "<image>\nWhat?", "ünïcödé 123 ✓"]


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def test_image(width, height):
    """Gradients plus a checkerboard (hard edges exercise the resize filter); identical on every host."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([
        (x * 255 // max(width - 1, 1)),
        (y * 255 // max(height - 1, 1)),
        np.where(((x >> 2) + (y >> 2)) % 2 == 0, 230, 20),
    ], axis=-1).astype(np.uint8)
    return Image.fromarray(rgb, "RGB")


def init_weights(model, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32) * 0.02
            p.copy_((noise + 1.0 if NORM_WEIGHT.search(name) else noise).to(p.dtype))


def image_processor(d):
    """The PIL-backend LLaVA-Next image processor (transformers >= 5.x: LlavaNextImageProcessorPil; before: the
    slow LlavaNextImageProcessor, also PIL)."""
    try:
        from transformers import LlavaNextImageProcessorPil as IP
    except ImportError:
        log("no LlavaNextImageProcessorPil in this transformers; using LlavaNextImageProcessor")
        from transformers import LlavaNextImageProcessor as IP
    return IP.from_pretrained(d)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--dtype", choices=["f32", "bf16"], default="f32")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--image-size", default="90x50", help="WIDTHxHEIGHT of the test image")
    ap.add_argument("--prompt", default="What is in the image?")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    torch_dtype = {"f32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    os.makedirs(args.out, exist_ok=True)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False

    # 1. Model from our config.json, fixed-seed weights, saved in transformers' layout.
    config = LlavaNextConfig.from_pretrained(args.dir)
    model = LlavaNextForConditionalGeneration(config)
    init_weights(model, args.seed)
    model = model.to(torch_dtype)
    for f in os.listdir(args.dir):
        if f.startswith("model") and (f.endswith(".safetensors") or f.endswith(".index.json")):
            os.remove(os.path.join(args.dir, f))
    model.save_pretrained(args.dir)
    del model
    try:
        model = LlavaNextForConditionalGeneration.from_pretrained(args.dir, dtype=torch_dtype, attn_implementation="eager")
    except TypeError:  # older keyword
        model = LlavaNextForConditionalGeneration.from_pretrained(args.dir, torch_dtype=torch_dtype, attn_implementation="eager")
    model = model.to(args.device).eval()
    image_token_id = getattr(model.config, "image_token_id", None)
    if image_token_id is None:
        image_token_id = model.config.image_token_index

    # 2. Processor: our tokenizer and chat template, the PIL image processor, our processor_config.json values.
    try:
        tok = AutoTokenizer.from_pretrained(args.dir)
    except Exception as e:  # fall back to the generic tokenizers-backed class over tokenizer.json
        log(f"AutoTokenizer failed ({e}); using PreTrainedTokenizerFast(tokenizer_file=...)")
        from transformers import PreTrainedTokenizerFast
        tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(args.dir, "tokenizer.json"), bos_token="<s>",
                                      eos_token="</s>", unk_token="<unk>", pad_token="<pad>")
    proc_cfg = json.load(open(os.path.join(args.dir, "processor_config.json")))
    chat_template = open(os.path.join(args.dir, "chat_template.jinja")).read()
    ip = image_processor(args.dir)
    processor = LlavaNextProcessor(
        image_processor=ip, tokenizer=tok, chat_template=chat_template, patch_size=proc_cfg["patch_size"],
        vision_feature_select_strategy=proc_cfg["vision_feature_select_strategy"],
        num_additional_image_tokens=proc_cfg["num_additional_image_tokens"], image_token=proc_cfg["image_token"])
    w, h = (int(v) for v in args.image_size.lower().split("x"))
    image = test_image(w, h)
    image.save(os.path.join(args.out, "image.png"))
    image = Image.open(os.path.join(args.out, "image.png")).convert("RGB")
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": args.prompt}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = processor(images=image, text=prompt, return_tensors="pt")
    ids = inputs["input_ids"]
    log(f"prompt {prompt!r}: {ids.shape[1]} ids, {(ids == image_token_id).sum().item()} image tokens, "
        f"pixel_values {tuple(inputs['pixel_values'].shape)}")

    # 3. Prefill logits of every position, text hidden states, and greedy generation.
    dev_inputs = {k: (v.to(args.device, torch_dtype) if k == "pixel_values" else v.to(args.device)) for k, v in inputs.items()}
    with torch.no_grad():
        out = model(**dev_inputs, output_hidden_states=True, return_dict=True)
        gen = model.generate(**dev_inputs, max_new_tokens=args.new_tokens, min_new_tokens=0, do_sample=False,
                             eos_token_id=None, pad_token_id=tok.pad_token_id)
    logits = out.logits[0].float().cpu()
    new_ids = gen[0, ids.shape[1]:].cpu()
    tensors = {
        "input_ids": ids.to(torch.int32).contiguous(),
        "attention_mask": inputs["attention_mask"].to(torch.int32).contiguous(),
        "pixel_values": inputs["pixel_values"].float().contiguous(),
        "image_sizes": inputs["image_sizes"].to(torch.int32).contiguous(),
        "logits": logits.contiguous(),
        "last_logits": logits[-1].clone(),  # (save_file refuses tensors sharing storage)
        "generated_ids": new_ids.to(torch.int32).contiguous(),
    }
    hs = getattr(out, "hidden_states", None)
    if hs is not None:
        for i, x in enumerate(hs):
            tensors[f"hidden_states.{i}"] = x[0].float().cpu().contiguous()
    save_file(tensors, os.path.join(args.out, "ref.safetensors"))

    ref = {
        "transformers": transformers.__version__, "torch": torch.__version__, "device": args.device,
        "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
        "dtype": args.dtype, "seed": args.seed, "image_processor": type(ip).__name__,
        "image_size": [h, w], "prompt": prompt, "input_ids": ids[0].tolist(),
        "num_image_tokens": int((ids == image_token_id).sum()), "image_token_id": int(image_token_id),
        "generated_ids": new_ids.tolist(), "generated_text": tok.decode(new_ids, skip_special_tokens=False),
        "first_token_is_argmax": bool(new_ids[0].item() == int(logits[-1].argmax())),
        "tokenizer_checks": [{"text": s, "ids": tok(s)["input_ids"], "decoded": tok.decode(tok(s)["input_ids"])} for s in TOKENIZER_SAMPLES],
    }
    with open(os.path.join(args.out, "ref.json"), "w") as f:
        json.dump(ref, f, indent=1)
    log(f"wrote {args.out}/ref.safetensors, ref.json; greedy: {ref['generated_ids']}")


if __name__ == "__main__":
    main()
