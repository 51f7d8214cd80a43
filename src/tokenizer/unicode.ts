// Pre-tokenizer regexes with their character classes as llama.cpp reads them:
// \s is Unicode's White_Space, which has U+0085 and not U+FEFF (JavaScript's
// \s is the other way round), and \p{L} and \p{N} are llama.cpp's own tables
// (unicodeclasses.ts), not those of the Unicode version Node's ICU was built
// with (Node 20 here has Unicode 17: 8,946 letters llama.cpp does not know).
//
// Written as JavaScript's own property less the code points where the two
// disagree (plus any only llama.cpp has), in the v flag's set notation: V8
// matches that about 3x faster than the same set spelled out as 660 ranges.
// The differences are found once per process by running \p{L} and \p{N} over
// a string of every code point.

import { LETTER_RANGES, NUMBER_RANGES } from "./unicodeclasses.js";

type Ranges = [number, number][];
const parse = (s: string): Ranges => s.split(",").map((r) => r.split("-").map((h) => parseInt(h, 16)) as [number, number]);
const esc = (cp: number) => `\\u{${cp.toString(16)}}`;
const spell = (rs: Ranges) => rs.map(([a, z]) => (a === z ? esc(a) : `${esc(a)}-${esc(z)}`)).join("");

// Every code point but the surrogates, and where each starts in that string
let everything: { text: string; cpAt: (offset: number) => number } | undefined;
function allCodePoints() {
  if (everything) return everything;
  const parts: string[] = [];
  for (let cp = 0; cp <= 0x10ffff; cp += 0x1000) {
    const chunk: number[] = [];
    for (let c = cp; c < cp + 0x1000; c++) if (c < 0xd800 || c > 0xdfff) chunk.push(c);
    parts.push(String.fromCodePoint(...chunk));
  }
  const bmp = 0x10000 - 0x800; // UTF-16 units taken by the BMP (one each, no surrogates)
  const cpAt = (o: number) => (o < 0xd800 ? o : o < bmp ? o + 0x800 : 0x10000 + (o - bmp) / 2);
  return (everything = { text: parts.join(""), cpAt });
}

// JavaScript's \p{X} as ranges
function jsRanges(prop: string): Ranges {
  const { text, cpAt } = allCodePoints();
  const out: Ranges = [];
  for (const m of text.matchAll(new RegExp(`\\p{${prop}}+`, "gu"))) {
    const end = m.index + m[0].length, low = m[0].charCodeAt(m[0].length - 1);
    out.push([cpAt(m.index), cpAt(low >= 0xdc00 && low <= 0xdfff ? end - 2 : end - 1)]); // an astral last code point takes 2 units
  }
  return out;
}

// a \ b and b \ a over code point ranges
function differences(a: Ranges, b: Ranges): { aOnly: Ranges; bOnly: Ranges } {
  const mark = new Uint8Array(0x110000);
  for (const [x, y] of a) mark.fill(1, x, y + 1);
  for (const [x, y] of b) for (let c = x; c <= y; c++) mark[c] |= 2;
  const runs = (v: number): Ranges => {
    const out: Ranges = [];
    for (let c = 0; c < mark.length; c++) {
      if (mark[c] !== v) continue;
      const s = c;
      while (c + 1 < mark.length && mark[c + 1] === v) c++;
      out.push([s, c]);
    }
    return out;
  };
  return { aOnly: runs(1), bOnly: runs(2) };
}

let classes: Record<string, string> | undefined;
// \p{L} and \p{N} as v-flag class expressions (each a nested class, valid inside a class too)
export function llamaCppClasses(): Record<string, string> {
  if (classes) return classes;
  const one = (prop: string, ours: string): string => {
    const { aOnly: jsOnly, bOnly: llamaOnly } = differences(jsRanges(prop), parse(ours));
    const base = jsOnly.length ? `[\\p{${prop}}--[${spell(jsOnly)}]]` : `\\p{${prop}}`;
    return llamaOnly.length ? `[${base}${spell(llamaOnly)}]` : base.startsWith("[") ? base : `[${base}]`;
  };
  return (classes = { "\\p{L}": one("L", LETTER_RANGES), "\\p{N}": one("N", NUMBER_RANGES), "\\s": "\\p{White_Space}", "\\S": "\\P{White_Space}" });
}

// A regex written with \p{L}, \p{N}, \s and \S (in or out of classes), with those classes as llama.cpp's.
export function llamaCppRegex(src: string): RegExp {
  const cls = llamaCppClasses();
  let out = "", inClass = false;
  for (let i = 0; i < src.length; i++) {
    const e = src[i] === "\\" ? (/^\\(p\{[LN]\}|[sS])/.exec(src.slice(i))?.[0] ?? src.slice(i, i + 2)) : undefined;
    if (e) {
      out += cls[e] ?? e;
      i += e.length - 1;
      continue;
    }
    if (src[i] === "[") inClass = true;
    else if (src[i] === "]") inClass = false;
    out += inClass && src[i] === "/" ? "\\/" : src[i]; // a literal / in a class is escaped in v mode
  }
  return new RegExp(out, "gv");
}

// The same classes spelled out as ranges (u flag): the specification the sets above must equal.
export function llamaCppRanges(): { letter: Ranges; number: Ranges } {
  return { letter: parse(LETTER_RANGES), number: parse(NUMBER_RANGES) };
}
