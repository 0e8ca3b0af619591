// A small byte-level BPE tokenizer (GPT-2 style: ByteLevel pre-tokenizer and decoder, merges learned here from a
// fixed text), emitted as a Hugging Face tokenizer.json that both HF tokenizers (Python) and
// @huggingface/tokenizers load. Used by the random-checkpoint writer; deterministic.

/** GPT-2's bytes_to_unicode: printable bytes map to themselves, the rest to U+0100 upwards. */
export function bytesToUnicode(): string[] {
  const keep = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  const out: string[] = [];
  let n = 0;
  for (let b = 0; b < 256; b++) out[b] = String.fromCodePoint(keep(b) ? b : 256 + n++);
  return out;
}

/** The ByteLevel pre-tokenizer's split (use_regex: true). */
const GPT2_SPLIT = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

const CORPUS = `A picture shows a small red house next to a green tree. The sky above the house is blue, and there are
white clouds in the sky. What is in the image? The image shows a cat sitting on a wooden table near a window.
Describe the picture in detail. There is a dog running on the grass in a park, and two children are playing
with a ball. The photo was taken on a sunny day. What color is the car? The car is red. How many people are in
the picture? There are three people standing in front of a building. The man on the left is wearing a black
jacket and the woman on the right is holding a cup of coffee. Please describe this image. This is a photo of a
city street at night with bright lights, tall buildings and many cars. Is there a person in the image? Yes, a
person is riding a bicycle along the road. What is the weather like? It looks cloudy and it might rain soon.
The assistant gives helpful, detailed and polite answers to the user's questions about images and text.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 12 24 100 336 672 2024. Question: what is shown here? Answer: a chart with
lines and bars; the values go up from left to right. The text in the image says "hello world".`;

export interface BpeModel {
  readonly vocab: Map<string, number>;
  readonly merges: string[];
}

/** Learns up to `numMerges` merges over CORPUS; ids start at `firstId` (bytes first, then merged tokens). */
export function trainByteLevelBpe(firstId: number, numMerges: number): BpeModel {
  const b2u = bytesToUnicode();
  const vocab = new Map<string, number>();
  for (let b = 0; b < 256; b++) vocab.set(b2u[b]!, firstId + b);
  const counts = new Map<string, number>();
  for (const piece of CORPUS.match(GPT2_SPLIT) ?? []) {
    const word = [...new TextEncoder().encode(piece)].map((b) => b2u[b]!).join("\u0000");
    counts.set(word, (counts.get(word) ?? 0) + 1);
  }
  let words = [...counts].map(([w, c]) => ({ syms: w.split("\u0000"), count: c }));
  const merges: string[] = [];
  while (merges.length < numMerges) {
    const pairs = new Map<string, number>();
    for (const { syms, count } of words) {
      for (let i = 0; i + 1 < syms.length; i++) {
        const key = `${syms[i]} ${syms[i + 1]}`;
        pairs.set(key, (pairs.get(key) ?? 0) + count);
      }
    }
    let best = "";
    let bestCount = 0;
    for (const [k, c] of pairs) if (c > bestCount || (c === bestCount && k < best)) [best, bestCount] = [k, c];
    if (bestCount === 0) break;
    const [a, b] = best.split(" ") as [string, string];
    merges.push(best);
    if (!vocab.has(a + b)) vocab.set(a + b, firstId + vocab.size);
    words = words.map(({ syms, count }) => {
      const out: string[] = [];
      for (let i = 0; i < syms.length; i++) {
        if (syms[i] === a && syms[i + 1] === b) {
          out.push(a + b);
          i++;
        } else out.push(syms[i]!);
      }
      return { syms: out, count };
    });
  }
  return { vocab, merges };
}

export interface SpecialToken {
  readonly id: number;
  readonly content: string;
}

/** tokenizer.json: BPE model, ByteLevel pre-tokenizer/decoder, `<s>` prepended by TemplateProcessing (as Llama). */
export function tokenizerJson(model: BpeModel, specials: readonly SpecialToken[], bos: SpecialToken): object {
  const vocab: Record<string, number> = {};
  for (const s of specials) vocab[s.content] = s.id;
  for (const [t, id] of model.vocab) vocab[t] = id;
  const byteLevel = { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true };
  const seq = (id: string) => ({ Sequence: { id, type_id: 0 } });
  const sp = { SpecialToken: { id: bos.content, type_id: 0 } };
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: specials.map((s) => ({ id: s.id, content: s.content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true })),
    normalizer: null,
    pre_tokenizer: byteLevel,
    post_processor: {
      type: "TemplateProcessing",
      single: [sp, seq("A")],
      pair: [sp, seq("A"), sp, seq("B")],
      special_tokens: { [bos.content]: { id: bos.content, ids: [bos.id], tokens: [bos.content] } },
    },
    decoder: byteLevel,
    model: {
      type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null,
      fuse_unk: false, byte_fallback: false, ignore_merges: false, vocab, merges: model.merges,
    },
  };
}
