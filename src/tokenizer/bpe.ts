// Byte-level BPE ("gpt2" tokenizer in GGUF), as used by Llama 3, Qwen2/3 and
// GPT-2: text is split by a pre-tokenizer regex, each piece's UTF-8 bytes are
// mapped to printable characters (bytes_to_unicode), and adjacent symbols are
// merged by lowest merge rank until none applies.

import { bytesToUnicode } from "../format/synthvocab.js";
import { splitSpecial } from "./spm.js";
import { EncodeOptions, TokenType, Tokenizer, VocabTokenizer } from "./types.js";

// JavaScript has no inline (?i:...) in Node 20: the contractions are spelled out.
const CONTRACTIONS = "'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD]";
export const PRE_TOKENIZERS: Record<string, RegExp> = {
  gpt2: /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu,
  "llama-bpe": new RegExp(`${CONTRACTIONS}|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+`, "gu"),
  qwen2: new RegExp(`${CONTRACTIONS}|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+`, "gu"),
};

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

export class BpeTokenizer extends VocabTokenizer implements Tokenizer {
  readonly kind = "gpt2" as const;
  readonly eos: number | undefined;
  readonly eog: ReadonlySet<number>;
  private ranks = new Map<string, number>();
  private b2u = bytesToUnicode();
  private u2b = new Map<string, number>();
  private specials: { text: string; id: number }[] = [];
  private userDefined: { text: string; id: number }[] = [];
  private pre: RegExp;
  private cache = new Map<string, number[]>();

  constructor(private v: BpeVocab) {
    super(v.tokens, v.types, v.bos, v.addBos);
    this.eos = v.eos;
    const eog = new Set<number>();
    for (const id of [v.eos, v.eot, v.eom]) if (id !== undefined) eog.add(id);
    // models that do not mark their end-of-turn token: recognise the usual ones
    for (const name of ["<|eot_id|>", "<|im_end|>", "<|endoftext|>", "<|end_of_text|>", "<|eom_id|>"]) {
      const id = v.tokens.indexOf(name);
      if (id >= 0 && (v.types[id] === TokenType.CONTROL)) eog.add(id);
    }
    this.eog = eog;
    this.pre = PRE_TOKENIZERS[v.pre] ?? PRE_TOKENIZERS[v.pre.startsWith("qwen") ? "qwen2" : v.pre.startsWith("llama") ? "llama-bpe" : "gpt2"];
    v.tokens.forEach((t, i) => {
      const ty = v.types[i] ?? TokenType.NORMAL;
      if (ty === TokenType.CONTROL && t.length > 0) this.specials.push({ text: t, id: i });
      if (ty === TokenType.USER_DEFINED && t.length > 0) this.userDefined.push({ text: t, id: i });
    });
    this.specials.push(...this.userDefined);
    this.specials.sort((a, b) => b.text.length - a.text.length);
    this.userDefined.sort((a, b) => b.text.length - a.text.length);
    v.merges.forEach((m, i) => this.ranks.set(m, i));
    this.b2u.forEach((u, b) => this.u2b.set(u, b));
  }

  encode(text: string, opts: EncodeOptions = {}): number[] {
    const out = this.start(opts);
    // user-defined tokens are always matched; control tokens only when asked
    for (const f of splitSpecial(text, opts.parseSpecial ? this.specials : this.userDefined)) {
      if (f.id !== undefined) out.push(f.id);
      else for (const m of f.text.matchAll(this.pre)) this.encodePiece(m[0], out);
    }
    return out;
  }

  private encodePiece(piece: string, out: number[]): void {
    const cached = this.cache.get(piece);
    if (cached) {
      out.push(...cached);
      return;
    }
    const syms = [...Buffer.from(piece, "utf8")].map((b) => this.b2u[b]);
    // Llama 3 ("ignore_merges"): a piece that is itself a token is taken whole
    const whole = this.v.pre === "llama-bpe" ? this.ids.get(syms.join("")) : undefined;
    if (whole !== undefined) {
      out.push(whole);
      return;
    }
    for (;;) {
      let best = Infinity, at = -1;
      for (let i = 0; i + 1 < syms.length; i++) {
        const r = this.ranks.get(syms[i] + " " + syms[i + 1]);
        if (r !== undefined && r < best) (best = r), (at = i);
      }
      if (at < 0) break;
      syms.splice(at, 2, syms[at] + syms[at + 1]);
    }
    const ids: number[] = [];
    for (const s of syms) {
      const id = this.ids.get(s);
      if (id !== undefined) ids.push(id);
      else for (const ch of s) { const c = this.ids.get(ch); if (c !== undefined) ids.push(c); }
    }
    if (this.cache.size < 50_000) this.cache.set(piece, ids);
    out.push(...ids);
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
