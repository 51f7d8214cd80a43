// Our tokenizers against llama.cpp's (node-llama-cpp) on the same GGUF vocabularies.

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { getLlama, Llama } from "node-llama-cpp";
import { readGGUF } from "../format/gguf.js";
import { synthesize } from "../format/synth.js";
import { STORIES_GGUF, tmpDir } from "../testing/shared.js";
import { decodeAll, tokenizerFromGGUF } from "./index.js";

const STRINGS = [
  "Hello world", "", " ", "   leading and trailing   ", "tabs\tand\nnew\n\nlines\r\n", "double  spaces   and    more",
  "Café naïve déjà vu über", "東京 is in 日本", "emoji 😀👍🏽 ❤️ and 🇫🇷", "digits 1234567 3.14159 2025-11-28 $3.50",
  "don't I'm you're we've they'll he'd IT'S", "The little robot walked to the river every morning.", "a<|im_start|>user\nhi<|im_end|>b",
  "<s>raw</s> <unk>", "x\u0000y\u200bz", "mixed: Lily's \"ball\" (red) — it's 100% fun!!!",
];

let llama: Llama;
const dir = tmpDir();
beforeAll(async () => {
  llama = await getLlama({ gpu: false, build: "never", logLevel: "error" as never });
});
afterAll(async () => llama?.dispose());

const models: [string, () => string][] = [
  ["llama (SentencePiece) stories260K", () => STORIES_GGUF],
  ["llama (SentencePiece) synthetic", () => synthesize({ arch: "llama", dim: 64, layers: 1, heads: 2, kvHeads: 1, ffn: 64, vocab: 700, context: 64, type: "F32", tied: true, seed: 1, tokenizer: "llama" }, `${dir}/spm.gguf`)],
  ["gpt2 (byte-level BPE) llama-bpe pre-tokenizer", () => synthesize({ arch: "llama", dim: 64, layers: 1, heads: 2, kvHeads: 1, ffn: 64, vocab: 900, context: 64, type: "F32", tied: true, seed: 1, tokenizer: "gpt2" }, `${dir}/bpe-llama.gguf`)],
  ["gpt2 (byte-level BPE) qwen2 pre-tokenizer", () => synthesize({ arch: "qwen2", dim: 64, layers: 1, heads: 2, kvHeads: 1, ffn: 64, vocab: 900, context: 64, type: "F32", tied: true, seed: 1 }, `${dir}/bpe-qwen.gguf`)],
];

describe.each(models)("%s", (_name, path) => {
  it("gives llama.cpp's token ids, with and without special-token parsing, and decodes back", async () => {
    const p = path();
    const tok = tokenizerFromGGUF(readGGUF(p));
    const lm = await llama.loadModel({ modelPath: p });
    try {
      for (const s of STRINGS) {
        expect(tok.encode(s, { addBos: false }), JSON.stringify(s)).toEqual(lm.tokenize(s, false));
        expect(tok.encode(s, { addBos: false, parseSpecial: true }), `${JSON.stringify(s)} (special)`).toEqual(lm.tokenize(s, true));
        if (tok.kind === "gpt2") expect(decodeAll(tok, tok.encode(s, { addBos: false }))).toBe(s);
      }
    } finally {
      await lm.dispose();
    }
  });
});
