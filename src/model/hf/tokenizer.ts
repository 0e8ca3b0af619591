// tokenizer.json + tokenizer_config.json -> ChatTokenizer. Encoding/decoding is @huggingface/tokenizers (a JS
// port of HF tokenizers: BPE/WordPiece/Unigram models, ByteLevel/Metaspace pre-tokenizers, TemplateProcessing);
// chat templates render with @huggingface/jinja, given what transformers' apply_chat_template gives them
// (messages, add_generation_prompt, the special-token strings; jinja defines raise_exception).
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { Template } from "@huggingface/jinja";
import { Tokenizer } from "@huggingface/tokenizers";
import { readJsonFile } from "./config.ts";
import { ModelError } from "./errors.ts";
import type { ChatMessage, ChatTokenizer } from "./types.ts";

type Json = Record<string, unknown>;

const isObj = (x: unknown): x is Json => typeof x === "object" && x !== null && !Array.isArray(x);

/** A special-token field of tokenizer_config.json: a string or an AddedToken object {content, ...}. */
function tokenString(x: unknown): string | null {
  if (typeof x === "string") return x;
  if (isObj(x) && typeof x["content"] === "string") return x["content"];
  return null;
}

/** The chat template: tokenizer_config.json's chat_template (a string, or named templates: "default"), else
 *  chat_template.jinja, else chat_template.json (where processors save theirs). */
function findChatTemplate(dir: string, config: Json): { template: string; source: string } | null {
  const source = join(dir, "tokenizer_config.json");
  const t = config["chat_template"];
  if (typeof t === "string") return { template: t, source };
  if (Array.isArray(t)) {
    const named = t.find((x) => isObj(x) && x["name"] === "default") ?? t[0];
    if (isObj(named) && typeof named["template"] === "string") return { template: named["template"], source };
    throw new ModelError("ZV6012", [source, "chat_template list has no {name, template} entry"]);
  }
  const jinja = join(dir, "chat_template.jinja");
  if (existsSync(jinja)) return { template: readFileSync(jinja, "utf8"), source: jinja };
  const json = join(dir, "chat_template.json");
  if (existsSync(json)) {
    const c = readJsonFile(json);
    if (isObj(c) && typeof c["chat_template"] === "string") return { template: c["chat_template"], source: json };
    throw new ModelError("ZV6012", [json, "no \"chat_template\" string"]);
  }
  return null;
}

export function loadTokenizer(dir: string): ChatTokenizer {
  const path = join(dir, "tokenizer.json");
  if (!existsSync(path)) {
    throw new ModelError("ZV6011", [dir, "no tokenizer.json (only the fast-tokenizer format is read; tokenizer.model alone is not supported)"]);
  }
  const json = readJsonFile(path);
  if (!isObj(json) || !isObj(json["model"])) throw new ModelError("ZV6011", [path, "no \"model\" object"]);
  const cfgPath = join(dir, "tokenizer_config.json");
  const config = existsSync(cfgPath) ? readJsonFile(cfgPath) : {};
  if (!isObj(config)) throw new ModelError("ZV6011", [cfgPath, "top level is not an object"]);
  let tok: Tokenizer;
  try {
    tok = new Tokenizer(json, config);
  } catch (e) {
    throw new ModelError("ZV6011", [path, (e as Error).message], { cause: e });
  }
  const special: Record<string, string> = {};
  for (const key of ["bos_token", "eos_token", "unk_token", "pad_token"]) {
    const s = tokenString(config[key]);
    if (s !== null) special[key] = s;
  }
  const chat = findChatTemplate(dir, config);
  let compiled: Template | null = null;
  const vocabSize = tok.get_vocab(true).size;

  return {
    vocabSize,
    bosToken: special["bos_token"] ?? null,
    eosToken: special["eos_token"] ?? null,
    encode(text, opts = {}) {
      return Int32Array.from(tok.encode(text, { add_special_tokens: opts.addSpecialTokens ?? true }).ids);
    },
    decode(ids, skipSpecial = false) {
      for (let i = 0; i < ids.length; i++) {
        const id = ids[i]!;
        if (!Number.isInteger(id) || id < 0 || tok.id_to_token(id) === undefined) {
          throw new ModelError("ZV6011", [path, `cannot decode token id ${id} (vocabulary size ${vocabSize})`]);
        }
      }
      return ids.length === 0 ? "" : tok.decode(Array.from(ids), { skip_special_tokens: skipSpecial });
    },
    tokenToId: (token) => tok.token_to_id(token),
    applyChatTemplate(messages: readonly ChatMessage[], addGenerationPrompt: boolean) {
      if (chat === null) throw new ModelError("ZV6012", [dir, "the checkpoint has no chat template"]);
      try {
        compiled ??= new Template(chat.template);
        return compiled.render({
          ...special,
          messages,
          add_generation_prompt: addGenerationPrompt,
        });
      } catch (e) {
        throw new ModelError("ZV6012", [chat.source, (e as Error).message], { cause: e });
      }
    },
  };
}
