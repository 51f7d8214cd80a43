// Tokenizer speed: the heap-based encoders (src/tokenizer/merge.ts) beside the
// quadratic reference (src/tokenizer/ref.ts) on story text of growing length,
// for stories260K's SentencePiece vocabulary and a synthetic byte-level BPE.
// The reference is timed only up to --ref-max characters (it takes minutes beyond).
//
//   npx tsc -p tsconfig.json && node dist/bench/tokenizer.js [--sizes 8000,32000,1000000] [--ref-max 32000]

import * as path from "node:path";
import { readGGUF } from "../src/format/gguf.js";
import { synthesize } from "../src/format/synth.js";
import { STORIES_GGUF, tmpDir } from "../src/testing/shared.js";
import { BpeTokenizer } from "../src/tokenizer/bpe.js";
import { tokenizerFromGGUF } from "../src/tokenizer/index.js";
import { RefBpeTokenizer, RefSpmTokenizer } from "../src/tokenizer/ref.js";
import { SpmTokenizer } from "../src/tokenizer/spm.js";
import { Tokenizer } from "../src/tokenizer/types.js";
import { args, row } from "./common.js";

const a = args();
const sizes = (a.get("sizes") ?? "8000,32000,1000000").split(",").map(Number);
const refMax = Number(a.get("ref-max") ?? 32000);
const STORY = "Once upon a time, there was a little girl named Lily. She loved to play outside in the sunshine with her red ball. ";

function time(tok: Tokenizer, text: string): { ms: number; n: number } {
  const t0 = performance.now();
  const n = tok.encode(text).length;
  return { ms: performance.now() - t0, n };
}

const bpeFile = synthesize({ arch: "llama", dim: 64, layers: 1, heads: 2, kvHeads: 1, ffn: 64, vocab: 900, context: 64, type: "F32", tied: true, seed: 1, tokenizer: "gpt2" }, path.join(tmpDir(), "bpe.gguf"));
const W = [34, 10, 10, 12, 14];
console.log(row(["vocabulary", "chars", "tokens", "heap ms", "reference ms"], W));
for (const [name, file] of [["stories260K (SentencePiece)", STORIES_GGUF], ["synthetic byte-level BPE", bpeFile]]) {
  const tok = tokenizerFromGGUF(readGGUF(file));
  const ref = tok instanceof SpmTokenizer ? new RefSpmTokenizer(tok.vocab) : new RefBpeTokenizer((tok as BpeTokenizer).vocab);
  for (const n of sizes) {
    const text = STORY.repeat(Math.ceil(n / STORY.length)).slice(0, n);
    const fast = time(tok, text);
    const slow = n <= refMax ? time(ref, text) : undefined;
    if (slow && slow.n !== fast.n) throw new Error(`${name}, ${n} chars: ${fast.n} tokens, the reference ${slow.n}`);
    console.log(row([name, n, fast.n, fast.ms.toFixed(0), slow ? slow.ms.toFixed(0) : "(skipped)"], W));
  }
}
