// The heap-based encoders (merge.ts) and their sliced encodeChunks against the
// quadratic reference encoders (ref.ts), id for id, on many random strings.

import { describe, expect, it } from "vitest";
import { readGGUF } from "../format/gguf.js";
import { synthesize } from "../format/synth.js";
import { STORIES_GGUF, tmpDir } from "../testing/shared.js";
import { BpeTokenizer } from "./bpe.js";
import { tokenizerFromGGUF } from "./index.js";
import { mergeBestFirst, safeCut } from "./merge.js";
import { RefBpeTokenizer, RefSpmTokenizer } from "./ref.js";
import { SpmTokenizer } from "./spm.js";
import { Tokenizer } from "./types.js";

function rng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

const CHARS = [..."abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,;:!?'\"()-—$%&*/\\_"];
const ODD = [" ", " ", " ", "  ", "\n", "\n\n", "\t", "\r\n", "é", "ï", "ü", "東京", "日本", "😀", "👍🏽", "❤️", "🇫🇷", "\u2581", "\u0000", "\u200b",
  "\ud800", "\udc00", "<s>", "</s>", "<unk>", "<|im_start|>", "<|im_end|>", "<|endoftext|>", "'s", "'ll", "don't", "   "];

// Random text: vocabulary entries (as text), characters, whitespace and oddities.
function randomText(r: () => number, tok: Tokenizer, maxPieces: number): string {
  let s = "";
  const n = Math.floor(r() * maxPieces);
  for (let i = 0; i < n; i++) {
    const x = r();
    if (x < 0.45) s += Buffer.from(tok.tokenBytes(Math.floor(r() * tok.vocabSize), 0)).toString("utf8");
    else if (x < 0.8) s += CHARS[Math.floor(r() * CHARS.length)];
    else s += ODD[Math.floor(r() * ODD.length)];
  }
  return s;
}

const dir = tmpDir();
const models: [string, () => string][] = [
  ["llama (SentencePiece) stories260K", () => STORIES_GGUF],
  ["llama (SentencePiece) synthetic", () => synthesize({ arch: "llama", dim: 64, layers: 1, heads: 2, kvHeads: 1, ffn: 64, vocab: 700, context: 64, type: "F32", tied: true, seed: 1, tokenizer: "llama" }, `${dir}/spm.gguf`)],
  ["gpt2 (byte-level BPE) llama-bpe pre-tokenizer", () => synthesize({ arch: "llama", dim: 64, layers: 1, heads: 2, kvHeads: 1, ffn: 64, vocab: 900, context: 64, type: "F32", tied: true, seed: 1, tokenizer: "gpt2" }, `${dir}/bpe-llama.gguf`)],
  ["gpt2 (byte-level BPE) qwen2 pre-tokenizer", () => synthesize({ arch: "qwen2", dim: 64, layers: 1, heads: 2, kvHeads: 1, ffn: 64, vocab: 900, context: 64, type: "F32", tied: true, seed: 1 }, `${dir}/bpe-qwen.gguf`)],
];

describe.each(models)("%s: heap encoder = quadratic reference", (_name, path) => {
  const setup = () => {
    const tok = tokenizerFromGGUF(readGGUF(path()));
    const ref = tok instanceof SpmTokenizer ? new RefSpmTokenizer(tok.vocab) : new RefBpeTokenizer((tok as BpeTokenizer).vocab);
    return { tok, ref };
  };

  it("on 3000 random strings, whole and cut into slices of 1 to 40 characters", () => {
    const { tok, ref } = setup();
    const r = rng(1234);
    let tokens = 0;
    for (let k = 0; k < 3000; k++) {
      const s = randomText(r, tok, 120);
      const parseSpecial = k % 3 === 0;
      const want = ref.encode(s, { addBos: false, parseSpecial });
      tokens += want.length;
      expect(tok.encode(s, { addBos: false, parseSpecial }), JSON.stringify(s)).toEqual(want);
      const chunkChars = 1 + Math.floor(r() * 40);
      expect([...tok.encodeChunks(s, { addBos: false, parseSpecial, chunkChars })].flat(), `${JSON.stringify(s)} in slices of ${chunkChars}`).toEqual(want);
    }
    expect(tokens).toBeGreaterThan(30_000); // not vacuous
  });

  it("on long texts (runs of one letter, of spaces, of digits, and long random text)", () => {
    const { tok, ref } = setup();
    const r = rng(99);
    const texts = ["a".repeat(3000), " ".repeat(3000), "7".repeat(3000), "ab ".repeat(1000), "\n \n".repeat(700), "é😀".repeat(800), randomText(r, tok, 3000)];
    for (const s of texts) {
      const want = ref.encode(s);
      expect(tok.encode(s), s.slice(0, 20)).toEqual(want);
      expect([...tok.encodeChunks(s, { chunkChars: 64 })].flat(), s.slice(0, 20)).toEqual(want);
    }
  });

  it("maxTokenBytes bounds every token: bytes / maxTokenBytes <= tokens", () => {
    const { tok } = setup();
    const r = rng(7);
    for (let k = 0; k < 500; k++) {
      const s = randomText(r, tok, 200);
      for (const parseSpecial of [false, true]) expect(tok.encode(s, { addBos: false, parseSpecial }).length * tok.maxTokenBytes).toBeGreaterThanOrEqual(Buffer.byteLength(s));
    }
    // and is no looser than the longest vocabulary entry's text
    let longest = 0;
    for (let id = 0; id < tok.vocabSize; id++) longest = Math.max(longest, Buffer.byteLength(tok.tokenText(id)));
    expect(tok.maxTokenBytes).toBeLessThanOrEqual(longest);
  });
});

// The quadratic loop, over abstract symbols: the lowest rank first, the leftmost of equal ranks.
function refMerge(sym: string[], rank: (a: string, b: string) => number | undefined): string[] {
  sym = [...sym];
  for (;;) {
    let best = Infinity, at = -1;
    for (let i = 0; i + 1 < sym.length; i++) {
      const k = rank(sym[i], sym[i + 1]);
      if (k !== undefined && k < best) (best = k), (at = i);
    }
    if (at < 0) return sym;
    sym.splice(at, 2, sym[at] + sym[at + 1]);
  }
}

describe("mergeBestFirst", () => {
  it("merges as the quadratic loop does, with many equal ranks", () => {
    const r = rng(5);
    for (let k = 0; k < 2000; k++) {
      // a small alphabet and few distinct ranks: many ties and overlapping candidates
      const ranks = new Map<string, number>();
      const alpha = "abcd".slice(0, 2 + Math.floor(r() * 3));
      const word = () => Array.from({ length: 1 + Math.floor(r() * 3) }, () => alpha[Math.floor(r() * alpha.length)]).join("");
      for (let m = 0; m < 12; m++) ranks.set(word() + "|" + word(), Math.floor(r() * 4));
      const rank = (a: string, b: string) => ranks.get(a + "|" + b);
      const sym = Array.from({ length: Math.floor(r() * 30) }, () => alpha[Math.floor(r() * alpha.length)]);
      const got = [...sym];
      const live = mergeBestFirst(got, rank);
      expect(live.map((i) => got[i]), sym.join("")).toEqual(refMerge(sym, rank));
    }
  });

  it("safeCut never cuts a surrogate pair nor inside a known pair", () => {
    const pairs = new Set(["ab", "b😀"]);
    expect(safeCut("ab😀c", 1, pairs)).toBe(4); // not a|b, not b|😀, not inside 😀
    expect(safeCut("xy", 1, pairs)).toBe(1);
    expect(safeCut("ab", 1, pairs)).toBe(-1);
  });
});
