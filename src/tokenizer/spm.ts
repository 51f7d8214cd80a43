// SentencePiece-style BPE ("llama" tokenizer in GGUF): spaces become U+2581, a
// dummy-prefix space is added to the text, code points missing from the
// vocabulary fall back to byte tokens <0xXX>, and adjacent pairs are merged by
// highest score (leftmost wins ties) until no merge applies.

import { EncodeOptions, TokenType, Tokenizer, VocabTokenizer } from "./types.js";

const SPACE = "\u2581";

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
  private byteIds = new Int32Array(256).fill(-1);
  private specials: { text: string; id: number }[] = [];
  private userDefined: { text: string; id: number }[] = [];

  constructor(private v: SpmVocab) {
    super(v.tokens, v.types, v.bos, v.addBos);
    this.eos = v.eos;
    const eog = new Set<number>();
    if (v.eos !== undefined) eog.add(v.eos);
    if (v.eot !== undefined) eog.add(v.eot);
    this.eog = eog;
    v.tokens.forEach((t, i) => {
      const ty = v.types[i] ?? TokenType.NORMAL;
      if (ty === TokenType.BYTE) {
        const m = /^<0x([0-9A-Fa-f]{2})>$/.exec(t);
        if (m) this.byteIds[parseInt(m[1], 16)] = i;
      }
      if ((ty === TokenType.CONTROL || ty === TokenType.USER_DEFINED || ty === TokenType.UNKNOWN) && t.length > 0) this.specials.push({ text: t, id: i });
    });
    this.specials.sort((a, b) => b.text.length - a.text.length);
    this.userDefined = this.specials.filter((sp) => this.tokenType(sp.id) === TokenType.USER_DEFINED);
  }

  encode(text: string, opts: EncodeOptions = {}): number[] {
    const out = this.start(opts);
    // user-defined tokens are always matched; control tokens only when asked
    const frags = splitSpecial(text, opts.parseSpecial ? this.specials : this.userDefined);
    // as llama.cpp: the dummy-prefix space goes before the text and after every special token
    let prevSpecial = true;
    for (const f of frags) {
      if (f.id !== undefined) {
        out.push(f.id);
        prevSpecial = true;
      } else if (f.text.length > 0) {
        this.encodeText((prevSpecial && this.v.addSpacePrefix ? " " : "") + f.text, out);
        prevSpecial = false;
      }
    }
    return out;
  }

  private encodeText(text: string, out: number[]): void {
    // symbols: one per code point (or per byte when the code point is unknown)
    const sym: string[] = [];
    const symId: number[] = [];
    for (const cp of text.replace(/ /g, SPACE)) {
      const id = this.ids.get(cp);
      if (id !== undefined) {
        sym.push(cp);
        symId.push(id);
      } else {
        for (const b of Buffer.from(cp, "utf8")) {
          sym.push(`\u0000byte${b}`); // never merges
          const bid = this.byteIds[b];
          symId.push(bid >= 0 ? bid : (this.v.unk ?? 0));
        }
      }
    }
    for (;;) {
      let best = -Infinity, bestIdx = -1, bestId = -1;
      for (let i = 0; i + 1 < sym.length; i++) {
        const id = this.ids.get(sym[i] + sym[i + 1]);
        if (id !== undefined && this.v.scores[id] > best) {
          best = this.v.scores[id];
          bestIdx = i;
          bestId = id;
        }
      }
      if (bestIdx < 0) break;
      sym.splice(bestIdx, 2, sym[bestIdx] + sym[bestIdx + 1]);
      symId.splice(bestIdx, 2, bestId);
    }
    for (const id of symId) out.push(id);
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
    if (this.v.addSpacePrefix && (prev === undefined || prev === this.bos) && s.startsWith(" ")) s = s.slice(1);
    return Buffer.from(s, "utf8");
  }
}

export function splitSpecial(text: string, specials: { text: string; id: number }[]): { text: string; id?: number }[] {
  if (specials.length === 0) return [{ text }];
  const out: { text: string; id?: number }[] = [];
  let start = 0, i = 0;
  while (i < text.length) {
    let hit: { text: string; id: number } | undefined;
    for (const s of specials) if (text.startsWith(s.text, i)) { hit = s; break; }
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
