// Byte-level BPE ("gpt2" tokenizer in GGUF), as used by Llama 3, Qwen2/3 and
// GPT-2: text is split by a pre-tokenizer regex, each piece's UTF-8 bytes are
// mapped to printable characters (bytes_to_unicode), and adjacent symbols are
// merged by lowest merge rank until none applies (merge.ts: a heap over merge
// candidates, as llama.cpp; ref.ts keeps the plain quadratic loop).

import { bytesToUnicode } from "../format/synthvocab.js";
import { innerPairs, mergeBestFirst, safePieces } from "./merge.js";
import { CHUNK_CHARS, SpecialTokens } from "./spm.js";
import { EncodeOptions, TokenType, Tokenizer, VocabTokenizer } from "./types.js";
import { llamaCppRegex } from "./unicode.js";

// The pre-tokenizers' regexes, classes as llama.cpp reads them (unicode.ts).
// JavaScript has no inline (?i:...) in Node 20: the contractions are spelled out.
const CONTRACTIONS = "'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD]";
const PRE_REGEXES: Record<string, string> = {
  gpt2: String.raw`'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`,
  "llama-bpe": String.raw`${CONTRACTIONS}|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`,
  qwen2: String.raw`${CONTRACTIONS}|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`,
  // Mistral's Tekken, as llama.cpp adapts it: "upper" letters are any letter but a-z, "lower" any but A-Z
  tekken: String.raw`[^\r\n\p{L}\p{N}]?(?:(?=\p{L})[^a-z])*(?:(?=\p{L})[^A-Z])+|[^\r\n\p{L}\p{N}]?(?:(?=\p{L})[^a-z])+(?:(?=\p{L})[^A-Z])*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+`,
};
const compiled = new Map<string, RegExp>();

// tokenizer.ggml.pre names llama.cpp gives each pre-tokenizer, and what else
// the name sets there (llama-vocab.cpp): whether a piece that is a token is
// taken whole before merging (ignore_merges), and whether BOS is added when
// the file does not say (add_bos_token).
const PRE_NAMES: Record<string, { regex: string; ignoreMerges?: boolean; addBos?: boolean }> = {
  ...Object.fromEntries(["llama-bpe", "llama3", "llama-v3", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2"].map((n) => [n, { regex: "llama-bpe", ignoreMerges: true, addBos: true }])),
  qwen2: { regex: "qwen2" },
  tekken: { regex: "tekken", ignoreMerges: true, addBos: true },
};
export function preTokenizer(pre: string): { regex: RegExp; ignoreMerges: boolean; addBos: boolean } {
  const p = PRE_NAMES[pre] ?? PRE_NAMES[pre.startsWith("qwen") ? "qwen2" : pre.startsWith("llama") ? "llama-bpe" : ""] ?? { regex: "gpt2" };
  const regex = compiled.get(p.regex) ?? compiled.set(p.regex, llamaCppRegex(PRE_REGEXES[p.regex])).get(p.regex)!;
  return { regex, ignoreMerges: p.ignoreMerges ?? false, addBos: p.addBos ?? false };
}

export interface BpeVocab {
  tokens: string[];
  types: number[];
  merges: string[];
  pre: string; // tokenizer.ggml.pre
  bos?: number;
  eos?: number;
  eot?: number;
  eom?: number;
  addBos: boolean;
}

const CACHE_PIECE_CHARS = 64; // longer pieces are not cached

export class BpeTokenizer extends VocabTokenizer implements Tokenizer {
  readonly kind = "gpt2" as const;
  readonly eos: number | undefined;
  readonly eog: ReadonlySet<number>;
  readonly maxTokenBytes: number;
  protected ranks = new Map<string, number>();
  protected b2u = bytesToUnicode();
  private u2b = new Map<string, number>();
  protected specials: { text: string; id: number }[] = [];
  protected userDefined: { text: string; id: number }[] = [];
  private specialsIndex: SpecialTokens;
  private userDefinedIndex: SpecialTokens;
  protected pre: RegExp;
  private cache = new Map<string, number[]>();
  protected ignoreMerges: boolean; // a piece that is a token is taken whole
  private maxLen = 0; // the longest merge result, in UTF-16 units
  private pairs?: Set<string>; // innerPairs of the merge results, built on first need

  constructor(readonly vocab: BpeVocab) {
    super(vocab.tokens, vocab.types, vocab.bos, vocab.addBos);
    const v = vocab;
    this.eos = v.eos;
    const eog = new Set<number>();
    for (const id of [v.eos, v.eot, v.eom]) if (id !== undefined) eog.add(id);
    // models that do not mark their end-of-turn token: recognise the usual ones
    for (const name of ["<|eot_id|>", "<|im_end|>", "<|endoftext|>", "<|end_of_text|>", "<|eom_id|>"]) {
      const id = v.tokens.indexOf(name);
      if (id >= 0 && (v.types[id] === TokenType.CONTROL)) eog.add(id);
    }
    this.eog = eog;
    const pre = preTokenizer(v.pre);
    this.pre = pre.regex;
    this.ignoreMerges = pre.ignoreMerges;
    v.tokens.forEach((t, i) => {
      const ty = v.types[i] ?? TokenType.NORMAL;
      if (ty === TokenType.CONTROL && t.length > 0) this.specials.push({ text: t, id: i });
      if (ty === TokenType.USER_DEFINED && t.length > 0) this.userDefined.push({ text: t, id: i });
    });
    this.specials.push(...this.userDefined);
    this.specials.sort((a, b) => b.text.length - a.text.length);
    this.userDefined.sort((a, b) => b.text.length - a.text.length);
    this.specialsIndex = new SpecialTokens(this.specials);
    this.userDefinedIndex = new SpecialTokens(this.userDefined);
    v.merges.forEach((m, i) => {
      this.ranks.set(m, i);
      this.maxLen = Math.max(this.maxLen, m.length - 1);
    });
    this.b2u.forEach((u, b) => this.u2b.set(u, b));
    // a special token stands for its text's bytes; any other for the bytes its characters map back to
    let maxBytes = 1;
    v.tokens.forEach((t, i) => {
      const ty = this.tokenType(i);
      maxBytes = Math.max(maxBytes, ty === TokenType.CONTROL || ty === TokenType.USER_DEFINED ? Buffer.byteLength(t) : this.tokenBytes(i).length);
    });
    this.maxTokenBytes = maxBytes;
  }

  encode(text: string, opts: EncodeOptions = {}): number[] {
    const out: number[] = [];
    for (const c of this.encodeChunks(text, opts)) for (const id of c) out.push(id);
    return out;
  }

  *encodeChunks(text: string, opts: EncodeOptions = {}): Generator<number[]> {
    const bos = this.start(opts);
    if (bos.length) yield bos;
    const chars = Math.max(opts.chunkChars ?? CHUNK_CHARS, 1);
    // user-defined tokens are always matched; control tokens only when asked
    for (const f of (opts.parseSpecial ? this.specialsIndex : this.userDefinedIndex).split(text)) {
      if (f.id !== undefined) {
        yield [f.id];
        continue;
      }
      let chunk: number[] = [], n = 0;
      for (const m of f.text.matchAll(this.pre)) {
        const piece = m[0];
        if (piece.length > chars) {
          if (chunk.length) yield chunk;
          (chunk = []), (n = 0);
          yield* this.encodeLongPiece(piece, chars);
          continue;
        }
        this.encodePiece(piece, chunk);
        n += piece.length;
        if (n >= chars) {
          yield chunk;
          (chunk = []), (n = 0);
        }
      }
      if (chunk.length) yield chunk;
    }
  }

  private encodePiece(piece: string, out: number[]): void {
    const cached = this.cache.get(piece);
    if (cached) {
      for (const id of cached) out.push(id);
      return;
    }
    const ids: number[] = [];
    const syms = this.symbols(piece);
    const whole = this.wholeToken(syms);
    if (whole !== undefined) ids.push(whole);
    else this.merge(syms, ids);
    if (piece.length <= CACHE_PIECE_CHARS && this.cache.size < 50_000) this.cache.set(piece, ids);
    for (const id of ids) out.push(id);
  }

  // A piece longer than `chars`, merged in slices cut where no merge can cross.
  private *encodeLongPiece(piece: string, chars: number): Generator<number[]> {
    const syms = this.symbols(piece);
    const whole = this.wholeToken(syms);
    if (whole !== undefined) {
      yield [whole];
      return;
    }
    this.pairs ??= innerPairs([...this.ranks.keys()].map((m) => m.replace(" ", "")));
    for (const part of safePieces(syms, chars, this.pairs)) {
      const ids: number[] = [];
      this.merge(part, ids);
      yield ids;
    }
  }

  // the piece's UTF-8 bytes as bytes_to_unicode characters, one UTF-16 unit each
  private symbols(piece: string): string {
    let s = "";
    for (const b of Buffer.from(piece, "utf8")) s += this.b2u[b];
    return s;
  }

  // Llama 3, Tekken ("ignore_merges"): a piece that is itself a token is taken whole
  private wholeToken(syms: string): number | undefined {
    return this.ignoreMerges ? this.ids.get(syms) : undefined;
  }

  private merge(symbols: string, out: number[]): void {
    const syms: string[] = [...symbols];
    const rank = (a: string, b: string) => this.ranks.get(a + " " + b);
    for (const i of mergeBestFirst(syms, rank, this.maxLen)) {
      const id = this.ids.get(syms[i]);
      if (id !== undefined) out.push(id);
      else for (const ch of syms[i]) { const c = this.ids.get(ch); if (c !== undefined) out.push(c); }
    }
  }

  tokenBytes(id: number): Uint8Array {
    const ty = this.tokenType(id);
    const t = this.tokenText(id);
    if (ty === TokenType.CONTROL || ty === TokenType.UNUSED) return new Uint8Array(0);
    if (ty === TokenType.USER_DEFINED) return Buffer.from(t, "utf8");
    const bytes: number[] = [];
    for (const ch of t) {
      const b = this.u2b.get(ch);
      if (b !== undefined) bytes.push(b);
      else bytes.push(...Buffer.from(ch, "utf8"));
    }
    return Uint8Array.from(bytes);
  }
}
