// Real (small) tokenizer vocabularies for synthetic models, learned by byte-pair
// merging over a fixed text, so that synthetic models tokenize like real ones.

const CORPUS = `
The little robot walked to the river every morning. It counted the stones, one by one,
and wrote the numbers in a small book: 12, 47, 305, 1999. When the rain came, the robot
sat under the old tree and listened to the water. "Where does the river go?" it asked
the bird. The bird said, "To the sea, and then to the sky, and then back to the hills."
People in the town were kind. They shared bread and stories, and the children played
games in the square until the lamps were lit. A teacher taught them to read, to write,
to think about the stars, the planets and the long history of their country.
Machines that share their work can do what no single machine can do alone. Each one holds
a part of the model, passes its result to the next, and the answer comes back quickly.
Café, naïve, déjà vu, über, 東京, 😀 and ❤️ are words too; so are tabs	and  double  spaces.
In 2024 the price was $3.50; in 2025 it rose to $4.25, which is 21.4% more. Don't panic!
She said: it's time. They're here, we've seen them, you'll like them, I'd go, he'll stay.
`;

function pairCounts(words: Map<string, { syms: string[]; n: number }>): Map<string, number> {
  const c = new Map<string, number>();
  for (const w of words.values())
    for (let i = 0; i + 1 < w.syms.length; i++) {
      const k = w.syms[i] + "\u0000" + w.syms[i + 1];
      c.set(k, (c.get(k) ?? 0) + w.n);
    }
  return c;
}

function learnMerges(words: Map<string, { syms: string[]; n: number }>, max: number): [string, string][] {
  const merges: [string, string][] = [];
  while (merges.length < max) {
    let best = "", bc = 1;
    for (const [k, n] of pairCounts(words)) if (n > bc || (n === bc && n > 1 && k < best)) (best = k), (bc = n);
    if (!best || bc < 2) break;
    const [a, b] = best.split("\u0000");
    merges.push([a, b]);
    for (const w of words.values()) {
      const s: string[] = [];
      for (let i = 0; i < w.syms.length; i++) {
        if (i + 1 < w.syms.length && w.syms[i] === a && w.syms[i + 1] === b) (s.push(a + b), i++);
        else s.push(w.syms[i]);
      }
      w.syms = s;
    }
  }
  return merges;
}

export function trainSpmVocab(vocabSize: number): { tokens: string[]; scores: number[]; types: number[] } {
  const tokens = ["<unk>", "<s>", "</s>"], types = [2, 3, 3], scores = [0, 0, 0];
  for (let b = 0; b < 256; b++) {
    tokens.push(`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`);
    types.push(6);
    scores.push(0);
  }
  const words = new Map<string, { syms: string[]; n: number }>();
  for (const w of CORPUS.replace(/\s+/g, " ").trim().split(" ")) {
    const s = "\u2581" + w;
    const e = words.get(s);
    if (e) e.n++;
    else words.set(s, { syms: [...s], n: 1 });
  }
  const chars = [...new Set([...CORPUS.replace(/\s+/g, " ").replace(/ /g, "\u2581")])].sort();
  const room = vocabSize - tokens.length;
  const have = new Set(tokens);
  let rank = 0;
  for (const c of chars.slice(0, room)) if (!have.has(c)) (tokens.push(c), types.push(1), scores.push(-1e6 - rank++), have.add(c));
  for (const [a, b] of learnMerges(words, Math.max(0, vocabSize - tokens.length))) {
    if (have.has(a + b) || tokens.length >= vocabSize) continue;
    tokens.push(a + b);
    types.push(1);
    scores.push(-rank++);
    have.add(a + b);
  }
  for (let i = 0; tokens.length < vocabSize; i++) (tokens.push(`\uE000${i}`), types.push(5), scores.push(-1e9));
  return { tokens: tokens.slice(0, vocabSize), scores: scores.slice(0, vocabSize), types: types.slice(0, vocabSize) };
}

// GPT-2's reversible map from bytes to printable code points.
export function bytesToUnicode(): string[] {
  const bs: number[] = [];
  for (let b = 33; b <= 126; b++) bs.push(b);
  for (let b = 161; b <= 172; b++) bs.push(b);
  for (let b = 174; b <= 255; b++) bs.push(b);
  const map: string[] = new Array(256);
  let n = 0;
  for (let b = 0; b < 256; b++) map[b] = bs.includes(b) ? String.fromCodePoint(b) : String.fromCodePoint(256 + n++);
  return map;
}

export function trainBpeVocab(vocabSize: number): { tokens: string[]; types: number[]; merges: string[]; bos: number; eos: number } {
  const b2u = bytesToUnicode();
  const enc = (s: string) => [...Buffer.from(s, "utf8")].map((b) => b2u[b]).join("");
  const specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
  const tokens: string[] = [...b2u];
  const words = new Map<string, { syms: string[]; n: number }>();
  for (const m of CORPUS.matchAll(/ ?\p{L}+| ?\p{N}| ?[^\s\p{L}\p{N}]+|\s+/gu)) {
    const s = enc(m[0]);
    const e = words.get(s);
    if (e) e.n++;
    else words.set(s, { syms: [...s], n: 1 });
  }
  const merges: string[] = [];
  const have = new Set(tokens);
  for (const [a, b] of learnMerges(words, Math.max(0, vocabSize - 256 - specials.length))) {
    if (have.has(a + b)) continue;
    merges.push(`${a} ${b}`);
    tokens.push(a + b);
    have.add(a + b);
  }
  const types = tokens.map(() => 1);
  for (let i = 0; tokens.length < vocabSize - specials.length; i++) (tokens.push(`[PAD${i}]`), types.push(5));
  const bos = tokens.length;
  for (const s of specials) (tokens.push(s), types.push(3));
  return { tokens, types, merges, bos, eos: bos + 2 };
}
