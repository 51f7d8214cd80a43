// SentencePiece-style BPE ("llama" tokenizer in GGUF): spaces become U+2581, a
// dummy-prefix space is added to the text, code points missing from the
// vocabulary fall back to byte tokens <0xXX>, and adjacent pairs are merged by
// highest score (leftmost wins ties) until no merge applies (merge.ts: a heap
// over merge candidates, as llama.cpp; ref.ts keeps the plain quadratic loop).

import { innerPairs, mergeBestFirst, safePieces } from "./merge.js";
import { EncodeOptions, TokenType, Tokenizer, VocabTokenizer } from "./types.js";

export const SPACE = "\u2581";
export const CHUNK_CHARS = 4096; // encodeChunks' default slice of text

export interface SpmVocab {
  tokens: string[];
  scores: number[];
  types: number[];
  bos?: number;
  eos?: number;
  eot?: number;
  unk?: number;
  addBos: boolean;
  addSpacePrefix: boolean;
}

export class SpmTokenizer extends VocabTokenizer implements Tokenizer {
  readonly kind = "llama" as const;
  readonly eos: number | undefined;
  readonly eog: ReadonlySet<number>;
  readonly maxTokenBytes: number;
  protected byteIds = new Int32Array(256).fill(-1);
  protected specials: { text: string; id: number }[] = [];
  protected userDefined: { text: string; id: number }[] = [];
  private specialsIndex: SpecialTokens;
  private userDefinedIndex: SpecialTokens;
  private maxLen = 0; // the longest token, in UTF-16 units
  private pairs?: Set<string>; // innerPairs of the vocabulary, built on first need

  constructor(readonly vocab: SpmVocab) {
    super(vocab.tokens, vocab.types, vocab.bos, vocab.addBos);
    const v = vocab;
    this.eos = v.eos;
    const eog = new Set<number>();
    if (v.eos !== undefined) eog.add(v.eos);
    if (v.eot !== undefined) eog.add(v.eot);
    this.eog = eog;
    let maxBytes = 1;
    v.tokens.forEach((t, i) => {
      const ty = v.types[i] ?? TokenType.NORMAL;
      if (ty === TokenType.BYTE) {
        const m = /^<0x([0-9A-Fa-f]{2})>$/.exec(t);
        if (m) this.byteIds[parseInt(m[1], 16)] = i;
      }
      if ((ty === TokenType.CONTROL || ty === TokenType.USER_DEFINED || ty === TokenType.UNKNOWN) && t.length > 0) this.specials.push({ text: t, id: i });
      this.maxLen = Math.max(this.maxLen, t.length);
      // a token stands for at most its own text's bytes (a space in the text is 1 byte, its U+2581 3)
      maxBytes = Math.max(maxBytes, Buffer.byteLength(t));
    });
    this.maxTokenBytes = maxBytes;
    this.specials.sort((a, b) => b.text.length - a.text.length);
    this.userDefined = this.specials.filter((sp) => this.tokenType(sp.id) === TokenType.USER_DEFINED);
    this.specialsIndex = new SpecialTokens(this.specials);
    this.userDefinedIndex = new SpecialTokens(this.userDefined);
  }

  encode(text: string, opts: EncodeOptions = {}): number[] {
    const out: number[] = [];
    for (const c of this.encodeChunks(text, opts)) for (const id of c) out.push(id);
    return out;
  }

  *encodeChunks(text: string, opts: EncodeOptions = {}): Generator<number[]> {
    const bos = this.start(opts);
    if (bos.length) yield bos;
    // user-defined tokens are always matched; control tokens only when asked
    const frags = (opts.parseSpecial ? this.specialsIndex : this.userDefinedIndex).split(text);
    // as llama.cpp: the dummy-prefix space goes before the text and after every special token
    let prevSpecial = true;
    for (const f of frags) {
      if (f.id !== undefined) {
        yield [f.id];
        prevSpecial = true;
      } else if (f.text.length > 0) {
        const t = ((prevSpecial && this.vocab.addSpacePrefix ? " " : "") + f.text).replace(/ /g, SPACE);
        const chars = Math.max(opts.chunkChars ?? CHUNK_CHARS, 1);
        if (t.length <= chars) yield this.encodeText(t);
        else for (const piece of safePieces(t, chars, (this.pairs ??= innerPairs(this.ids.keys())))) yield this.encodeText(piece);
        prevSpecial = false;
      }
    }
  }

  // text has its spaces as U+2581 already
  private encodeText(text: string): number[] {
    // symbols: one per code point, or one per byte (never merging) when the code point is unknown
    const sym: (string | null)[] = [];
    const symId: number[] = [];
    for (const cp of text) {
      const id = this.ids.get(cp);
      if (id !== undefined) {
        sym.push(cp);
        symId.push(id);
      } else {
        for (const b of Buffer.from(cp, "utf8")) {
          sym.push(null);
          const bid = this.byteIds[b];
          symId.push(bid >= 0 ? bid : (this.vocab.unk ?? 0));
        }
      }
    }
    const scores = this.vocab.scores;
    const rank = (a: string, b: string): number | undefined => {
      const id = this.ids.get(a + b);
      if (id === undefined) return undefined;
      const s = scores[id];
      return s > -Infinity ? -s : undefined; // a missing or NaN score never merges
    };
    const out: number[] = [];
    for (const i of mergeBestFirst(sym, rank, this.maxLen)) out.push(sym[i] === null ? symId[i] : this.ids.get(sym[i]!)!);
    return out;
  }

  tokenBytes(id: number, prev: number | undefined): Uint8Array {
    const ty = this.tokenType(id);
    if (ty === TokenType.CONTROL || ty === TokenType.UNKNOWN || ty === TokenType.UNUSED) return new Uint8Array(0);
    const t = this.tokenText(id);
    if (ty === TokenType.BYTE) {
      const m = /^<0x([0-9A-Fa-f]{2})>$/.exec(t);
      if (m) return Uint8Array.of(parseInt(m[1], 16));
    }
    let s = t.replace(/\u2581/g, " ");
    // the dummy prefix added at encoding is removed after BOS (or at the start)
    if (this.vocab.addSpacePrefix && (prev === undefined || prev === this.bos) && s.startsWith(" ")) s = s.slice(1);
    return Buffer.from(s, "utf8");
  }
}

// Finds special tokens in a text, the longest first where several start at
// the same place; candidates are looked up by their first UTF-16 unit.
export class SpecialTokens {
  private byFirst = new Map<number, { text: string; id: number }[]>();
  constructor(specials: { text: string; id: number }[]) {
    const sorted = [...specials].sort((a, b) => b.text.length - a.text.length);
    for (const s of sorted) {
      if (s.text.length === 0) continue;
      const c = s.text.charCodeAt(0);
      (this.byFirst.get(c) ?? this.byFirst.set(c, []).get(c)!).push(s);
    }
  }

  split(text: string): { text: string; id?: number }[] {
    if (this.byFirst.size === 0) return [{ text }];
    const out: { text: string; id?: number }[] = [];
    let start = 0, i = 0;
    while (i < text.length) {
      let hit: { text: string; id: number } | undefined;
      const cands = this.byFirst.get(text.charCodeAt(i));
      if (cands) for (const s of cands) if (text.startsWith(s.text, i)) { hit = s; break; }
      if (hit) {
        if (i > start) out.push({ text: text.slice(start, i) });
        out.push({ text: hit.text, id: hit.id });
        i += hit.text.length;
        start = i;
      } else i++;
    }
    if (start < text.length) out.push({ text: text.slice(start) });
    return out;
  }
}
