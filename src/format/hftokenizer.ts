// A Hugging Face byte-level BPE tokenizer (tokenizer.json + tokenizer_config.json)
// as GGUF tokenizer metadata, written the way llama.cpp's convert_hf_to_gguf.py
// writes it (get_vocab_base and gguf-py's SpecialVocab): one token per id up to
// the model's vocab_size ("[PADi]" UNUSED where no token has that id), added
// tokens CONTROL when special or when they look special ("<|...|>"), else
// USER_DEFINED, merges as "a b" strings, the bos/eos ids named by
// tokenizer_config.json, add_bos/add_eos from tokenizer_config.json or else
// from tokenizer.json's TemplateProcessing, and the chat template. Added tokens
// are taken as written (the script re-decodes those not normalized, which gives
// the same text for the vocabularies tested here).

import { LayerswarmError } from "../errors.js";
import { GGUFValueType, TypedMeta, meta } from "./gguf.js";
import { bytesToUnicode } from "./synthvocab.js";

export interface HfTokenizerJson {
  model: { type: string; vocab: Record<string, number>; merges?: (string | [string, string])[]; byte_fallback?: boolean };
  added_tokens?: { id: number; content: string; special: boolean; normalized?: boolean }[];
  post_processor?: HfPostProcessor | null;
}
interface HfPostProcessor {
  type: string;
  processors?: HfPostProcessor[];
  single?: ({ SpecialToken: { id: string } } | { Sequence: { id: string } })[];
}
export type HfTokenizerConfig = Record<string, unknown>;

export interface HfConvertOptions {
  pre: string; // tokenizer.ggml.pre: the pre-tokenizer llama.cpp recognises by its hash (llama-bpe, qwen2, tekken, ...)
  vocabSize?: number; // the model's config.json vocab_size (default: the highest id + 1)
}

// gguf-py's does_token_look_special
function looksSpecial(t: string): boolean {
  return ["<pad>", "<mask>", "<2mass>", "[@BOS@]"].includes(t) || (t.startsWith("<|") && t.endsWith("|>")) ||
    (t.startsWith("<\uff5c") && t.endsWith("\uff5c>")) || (t.startsWith("<unused") && t.endsWith(">"));
}

// The tokenizer.json TemplateProcessing's single-sequence template: does it start with BOS / end with EOS?
function templateAdds(pp: HfPostProcessor | null | undefined, bos?: string, eos?: string): { bos?: boolean; eos?: boolean } {
  if (!pp) return {};
  if (pp.type === "Sequence") {
    for (const p of pp.processors ?? []) {
      const r = templateAdds(p, bos, eos);
      if (r.bos !== undefined || r.eos !== undefined) return r;
    }
    return {};
  }
  if (pp.type !== "TemplateProcessing" || !pp.single?.length) return {};
  const special = (e: (typeof pp.single)[number]) => ("SpecialToken" in e ? e.SpecialToken.id : undefined);
  const first = special(pp.single[0]), last = special(pp.single[pp.single.length - 1]);
  return { bos: first !== undefined && first === bos, eos: pp.single.length > 1 && last !== undefined && last === eos };
}

export function ggufTokenizerFromHF(tj: HfTokenizerJson, cfg: HfTokenizerConfig, o: HfConvertOptions): Record<string, TypedMeta> {
  if (tj.model.type !== "BPE" || tj.model.byte_fallback)
    throw new LayerswarmError("UNSUPPORTED", `only byte-level BPE tokenizers convert here (model ${tj.model.type}${tj.model.byte_fallback ? ", byte_fallback" : ""})`);
  const byId = new Map<number, string>();
  for (const [t, id] of Object.entries(tj.model.vocab)) byId.set(id, t);
  const added = new Map<number, { content: string; special: boolean }>();
  for (const a of tj.added_tokens ?? []) (added.set(a.id, a), byId.set(a.id, a.content));
  const n = o.vocabSize ?? [...byId.keys()].reduce((a, b) => Math.max(a, b + 1), 0);
  const tokens: string[] = [], types: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = byId.get(i), a = added.get(i);
    if (t === undefined) (tokens.push(`[PAD${i}]`), types.push(5)); // UNUSED
    else if (a) (tokens.push(t), types.push(a.special || looksSpecial(t) ? 3 : 4)); // CONTROL : USER_DEFINED
    else (tokens.push(t), types.push(1)); // NORMAL
  }
  const merges = (tj.model.merges ?? []).map((m) => (Array.isArray(m) ? m.join(" ") : m));
  const m: Record<string, TypedMeta> = {
    "tokenizer.ggml.model": meta.str("gpt2"),
    "tokenizer.ggml.pre": meta.str(o.pre),
    "tokenizer.ggml.tokens": meta.arr(GGUFValueType.STRING, tokens),
    "tokenizer.ggml.token_type": meta.arr(GGUFValueType.INT32, types),
    "tokenizer.ggml.merges": meta.arr(GGUFValueType.STRING, merges),
  };
  const name = (k: string): string | undefined => {
    const v = cfg[`${k}_token`];
    return typeof v === "string" ? v : v && typeof v === "object" && typeof (v as { content?: unknown }).content === "string" ? (v as { content: string }).content : undefined;
  };
  // SpecialVocab looks the names up among the added tokens (GGUF's key names, "seperator" as spelled there)
  const keys: Record<string, string> = { bos: "bos", eos: "eos", unk: "unknown", sep: "seperator", pad: "padding" };
  for (const [k, key] of Object.entries(keys)) {
    const t = name(k), id = t === undefined ? undefined : (tj.added_tokens ?? []).find((a) => a.content === t)?.id;
    if (id !== undefined) m[`tokenizer.ggml.${key}_token_id`] = meta.u32(id);
  }
  const tp = templateAdds(tj.post_processor, name("bos"), name("eos"));
  for (const k of ["bos", "eos"] as const) {
    const v = typeof cfg[`add_${k}_token`] === "boolean" ? (cfg[`add_${k}_token`] as boolean) : tp[k];
    if (v !== undefined) m[`tokenizer.ggml.add_${k}_token`] = meta.bool(v);
  }
  const tmpl = cfg.chat_template;
  if (typeof tmpl === "string") m["tokenizer.chat_template"] = meta.str(tmpl);
  return m;
}

// A tiktoken vocabulary (each token's bytes, by rank) as byte-level BPE tokens
// and merges, as transformers' TikTokenConverter derives them (the conversion
// behind the tokenizer.json of Mistral's Tekken models): every split of a
// token into two tokens is a merge, ordered by the token's rank, then the
// left part's rank, then the right part's.
export function bpeFromTiktoken(ranks: Uint8Array[]): { tokens: string[]; merges: string[] } {
  const b2u = bytesToUnicode();
  const key = (b: Uint8Array) => Buffer.from(b).toString("latin1");
  const rankOf = new Map<string, number>();
  ranks.forEach((b, r) => rankOf.set(key(b), r));
  const tokens = ranks.map((b) => Array.from(b, (x) => b2u[x]).join(""));
  const merges: string[] = [];
  ranks.forEach((b) => {
    const k = key(b), local: [number, number][] = [];
    for (let i = 1; i < k.length; i++) {
      const l = rankOf.get(k.slice(0, i)), rr = rankOf.get(k.slice(i));
      if (l !== undefined && rr !== undefined) local.push([l, rr]);
    }
    local.sort((x, y) => x[0] - y[0] || x[1] - y[1]);
    for (const [l, rr] of local) merges.push(`${tokens[l]} ${tokens[rr]}`);
  });
  return { tokens, merges };
}
