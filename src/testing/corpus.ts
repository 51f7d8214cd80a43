// Real text that nobody in this project wrote, to tokenize: the README and
// documentation files shipped in node_modules and in Debian's /usr/share/doc,
// translations (zod's locale messages, in some 50 languages), source code
// (JavaScript from node_modules, C and Perl examples from /usr/share/doc), and
// files full of emoji. Read from what the machine has at test time, in an
// order fixed by each path's hash (so a budget samples every source evenly),
// each document capped in size and each source capped in total.

import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import * as zlib from "node:zlib";
import { REPO } from "./shared.js";

export interface Doc {
  source: string; // what kind of text
  path: string;
  text: string;
}

interface Source {
  name: string;
  roots: string[];
  match: (file: string) => boolean;
  budgetBytes: number;
}

const DOC_BYTES = 24 * 1024; // at most this much of each file

const NM = path.join(REPO, "node_modules");
const isDoc = (f: string) => /^(readme|changelog|history|contributing|news|faq|authors)([._-].*)?(\.(md|markdown|txt|rst))?$/i.test(path.basename(f)) || /\.(md|markdown|rst)$/i.test(f);
const SOURCES: Source[] = [
  { name: "node_modules docs", roots: [NM], match: isDoc, budgetBytes: 640 * 1024 },
  { name: "/usr/share/doc", roots: ["/usr/share/doc"], match: (f) => isDoc(f) || /\.(txt|gz)$/.test(f) || path.basename(f) === "copyright", budgetBytes: 640 * 1024 },
  { name: "translations", roots: [path.join(NM, "zod/v4/locales")], match: (f) => f.endsWith(".js"), budgetBytes: 160 * 1024 },
  { name: "code", roots: [NM, "/usr/share/doc"], match: (f) => /\.(js|mjs|c|h|pl|py|sh)$/.test(f) && !/\.min\.js$/.test(f), budgetBytes: 256 * 1024 },
  { name: "emoji", roots: [NM], match: (f) => /(spinners\.json|emoji[^/]*\.(json|js|txt))$/i.test(f), budgetBytes: 64 * 1024 },
];

function* walk(dir: string, depth = 0): Generator<string> {
  let ents: fs.Dirent[];
  try {
    ents = fs.readdirSync(dir, { withFileTypes: true });
  } catch {
    return;
  }
  for (const e of ents) {
    const p = path.join(dir, e.name);
    if (e.isDirectory() && depth < 12 && e.name !== ".git" && e.name !== ".cache") yield* walk(p, depth + 1);
    else if (e.isFile()) yield p;
  }
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

// The file's text (a .gz decompressed), at most DOC_BYTES of it cut at a line end, or undefined if not UTF-8 text.
function readText(file: string): string | undefined {
  try {
    const st = fs.statSync(file);
    if (st.size === 0 || st.size > 4 << 20) return undefined;
    let b: Buffer = fs.readFileSync(file);
    if (file.endsWith(".gz")) b = zlib.gunzipSync(b);
    if (b.includes(0)) return undefined; // binary
    if (b.length > DOC_BYTES) {
      const nl = b.lastIndexOf(10, DOC_BYTES);
      b = b.subarray(0, nl > 0 ? nl + 1 : DOC_BYTES);
    }
    return utf8.decode(b);
  } catch {
    return undefined;
  }
}

const hash = (s: string) => crypto.createHash("sha1").update(s).digest("hex");

export function realCorpus(): Doc[] {
  const docs: Doc[] = [];
  const seen = new Set<string>(); // the same text (a copy of a license, a README twice) once
  for (const s of SOURCES) {
    const files = [...new Set(s.roots.flatMap((r) => [...walk(r)]))].filter(s.match).sort((a, b) => (hash(a) < hash(b) ? -1 : 1));
    let bytes = 0;
    for (const f of files) {
      if (bytes >= s.budgetBytes) break;
      const text = readText(f);
      if (!text || !text.trim()) continue;
      const h = hash(text);
      if (seen.has(h)) continue;
      seen.add(h);
      docs.push({ source: s.name, path: f, text });
      bytes += Buffer.byteLength(text);
    }
  }
  return docs;
}

// Texts that stress what real documents seldom hold: long runs of whitespace and digits, mixed scripts and emoji.
export function edgeTexts(): string[] {
  const out: string[] = [];
  for (const n of [1, 2, 3, 4, 7, 8, 15, 16, 17, 31, 64, 100, 257, 1000]) {
    out.push(" ".repeat(n), `a${" ".repeat(n)}b`, `x\n${" ".repeat(n)}y`, "\t".repeat(n) + "z", "\n".repeat(n), `w${"\r\n".repeat(n)}`, ` \t\n`.repeat(n));
    out.push("1234567890".repeat(Math.ceil(n / 10)).slice(0, n), `v${"9".repeat(n)}.${"0".repeat(n)}`, `${"٣".repeat(n)} ${"१२३".repeat(n)}`);
  }
  out.push("😀".repeat(300), "👍🏽👩‍👩‍👧‍👦🇫🇷🏳️‍🌈".repeat(50), "a\u0301e\u0301 ñ n\u0303 ﬁ Ａ１", "\u200b\u200c\u200d\u2060\ufeff", "\u00a0\u2002\u2003\u3000 spaces");
  // pieces longer than a tokenizer's chunk (4096 UTF-16 units), merged in slices
  out.push("a".repeat(9000), " ".repeat(9000) + "x", "😀".repeat(3000), "ab1".repeat(3000), `${"-".repeat(5000)}\n${"=".repeat(5000)}`);
  // a byte-order mark inside a text, NEL, and letters and digits newer than llama.cpp's Unicode tables
  out.push("a \ufeff:b \ufeff#} x\ufeff//y", "line\u0085next \u0085 x", "\u{13460}\u{13461} \u1c89x \u{10d4a}\u{10d4b}y \u{10d40}\u{10d41} \u{116d0}1");
  return out;
}

// Strings of random code points from every plane (seeded: the same every run), with spaces, tabs and newlines.
export function fuzzTexts(n: number, length: number, seed = 7): string[] {
  let a = seed >>> 0;
  const r = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const out: string[] = [];
  for (let k = 0; k < n; k++) {
    let s = "";
    for (let j = 0; j < length; j++) {
      const x = r();
      let cp = x < 0.3 ? 32 + Math.floor(r() * 95) : x < 0.6 ? Math.floor(r() * 0x3000) : x < 0.8 ? Math.floor(r() * 0x10000) : Math.floor(r() * 0x30000);
      if (cp >= 0xd800 && cp < 0xe000) cp = 0x20; // no lone surrogates
      s += String.fromCodePoint(cp);
      if (r() < 0.1) s += " \n\t"[Math.floor(r() * 3)];
    }
    out.push(s);
  }
  return out;
}
