// The tokenizers as first written: one pass over all adjacent pairs per merge,
// O(n²) in the text's length, and special tokens found by trying each at every
// position. Kept as the executable specification that the heap-based encoders
// (merge.ts) and their sliced encodeChunks must match id for id
// (ref.test.ts), and as the baseline of bench/tokenizer.ts.

import { BpeTokenizer } from "./bpe.js";
import { SPACE, SpmTokenizer } from "./spm.js";
import { EncodeOptions } from "./types.js";

export class RefSpmTokenizer extends SpmTokenizer {
  override encode(text: string, opts: EncodeOptions = {}): number[] {
    const out = this.start(opts);
    const frags = refSplitSpecial(text, opts.parseSpecial ? this.specials : this.userDefined);
    let prevSpecial = true;
    for (const f of frags) {
      if (f.id !== undefined) {
        out.push(f.id);
        prevSpecial = true;
      } else if (f.text.length > 0) {
        this.refEncodeText((prevSpecial && this.vocab.addSpacePrefix ? " " : "") + f.text, out);
        prevSpecial = false;
      }
    }
    return out;
  }

  override *encodeChunks(text: string, opts: EncodeOptions = {}): Generator<number[]> {
    yield this.encode(text, opts);
  }

  private refEncodeText(text: string, out: number[]): void {
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
          symId.push(bid >= 0 ? bid : (this.vocab.unk ?? 0));
        }
      }
    }
    for (;;) {
      let best = -Infinity, bestIdx = -1, bestId = -1;
      for (let i = 0; i + 1 < sym.length; i++) {
        const id = this.ids.get(sym[i] + sym[i + 1]);
        if (id !== undefined && this.vocab.scores[id] > best) {
          best = this.vocab.scores[id];
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
}

export class RefBpeTokenizer extends BpeTokenizer {
  override encode(text: string, opts: EncodeOptions = {}): number[] {
    const out = this.start(opts);
    for (const f of refSplitSpecial(text, opts.parseSpecial ? this.specials : this.userDefined)) {
      if (f.id !== undefined) out.push(f.id);
      else for (const m of f.text.matchAll(this.pre)) this.refEncodePiece(m[0], out);
    }
    return out;
  }

  override *encodeChunks(text: string, opts: EncodeOptions = {}): Generator<number[]> {
    yield this.encode(text, opts);
  }

  private refEncodePiece(piece: string, out: number[]): void {
    const syms = [...Buffer.from(piece, "utf8")].map((b) => this.b2u[b]);
    // Llama 3 ("ignore_merges"): a piece that is itself a token is taken whole
    const whole = this.ignoreMerges ? this.ids.get(syms.join("")) : undefined;
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
    for (const s of syms) {
      const id = this.ids.get(s);
      if (id !== undefined) out.push(id);
      else for (const ch of s) { const c = this.ids.get(ch); if (c !== undefined) out.push(c); }
    }
  }
}

export function refSplitSpecial(text: string, specials: { text: string; id: number }[]): { text: string; id?: number }[] {
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
