import { describe, expect, it } from "vitest";
import { readGGUF } from "../../format/gguf.js";
import { trainBpeVocab } from "../../format/synthvocab.js";
import { Rng } from "../../model/sampler.js";
import { BpeTokenizer } from "../../tokenizer/bpe.js";
import { tokenizerFromGGUF } from "../../tokenizer/index.js";
import { STORIES_GGUF } from "../../testing/shared.js";
import { JsonState } from "./automaton.js";
import { JsonConstraint } from "./constraint.js";
import { Grammar, accepts, anyObjectGrammar, compileSchema } from "./schema.js";
import { TokenBytes, VocabIndex } from "./vocab.js";

const spm = tokenizerFromGGUF(readGGUF(STORIES_GGUF));
const bpeVocab = trainBpeVocab(900);
const bpe = new BpeTokenizer({ ...bpeVocab, pre: "qwen2", addBos: false });
const VOCABS: [string, TokenBytes][] = [["SentencePiece (stories260K)", spm], ["byte-level BPE", bpe]];

const SCHEMAS: Record<string, unknown> = {
  person: {
    type: "object",
    properties: { name: { type: "string", minLength: 1, maxLength: 8 }, age: { type: "integer" }, good: { type: "boolean" } },
    required: ["name", "age", "good"], additionalProperties: false,
  },
  nested: {
    type: "object",
    properties: {
      hero: { type: "object", properties: { name: { type: "string", maxLength: 6 }, friends: { type: "array", items: { type: "string", minLength: 2, maxLength: 4 }, minItems: 1, maxItems: 3 } }, required: ["name", "friends"], additionalProperties: false },
      mood: { enum: ["happy", "sad", 3] },
      note: { type: ["string", "null"] },
    },
    required: ["hero", "mood"], additionalProperties: false,
  },
  list: { type: "array", items: { type: "number" }, minItems: 2, maxItems: 4 },
  free: { type: "object", properties: { id: { type: "integer" } }, required: ["id"] },
  anyObject: { type: "object" },
};

describe("token masks", () => {
  for (const [name, tok] of VOCABS) {
    it(`${name}: the trie walk allows exactly the tokens the automaton accepts, and EOS only when complete`, () => {
      const v = new VocabIndex(tok);
      const docs: [Grammar, string][] = [
        [compileSchema(SCHEMAS.nested), '{"hero": {"name":"Tim","friends":["ab", "cde"]},"mood":"sad","note":null}'],
        [anyObjectGrammar(), '{"a b":[1.5e2,-0,{"é":"x\\n"}], "t":true}'],
      ];
      for (const [g, doc] of docs) {
        const c = new JsonConstraint(g, v);
        let s = JsonState.initial(g);
        const bytes = Buffer.from(doc, "utf8");
        for (let k = 0; k <= bytes.length; k++) {
          const m = c["mask"](1e9);
          for (let id = 0; id < tok.vocabSize; id++) {
            const b = tok.tokenBytes(id, -1);
            const want = tok.eog.has(id) ? s.complete : b.length > 0 && s.stepBytes(b) !== null;
            if (m[id] !== (want ? 1 : 0)) throw new Error(`${doc.slice(0, k)}: token ${id} ${JSON.stringify(Buffer.from(b).toString())}: mask ${m[id]}, automaton ${want}`);
          }
          if (k < bytes.length) {
            s = s.step(bytes[k])!;
            c["state"] = s; // follow the document byte by byte
          }
        }
      }
    });

    it(`${name}: any choice among the allowed tokens closes the text within the budget`, () => {
      const v = new VocabIndex(tok);
      const rng = new Rng(7);
      for (const [sname, schema] of Object.entries(SCHEMAS)) {
        const g = compileSchema(schema);
        const need = JsonState.initial(g).closeCost();
        for (const extra of [0, 1, 3, 10, 40]) {
          for (let trial = 0; trial < 4; trial++) {
            const max = need + extra;
            const c = new JsonConstraint(g, v);
            let n = 0;
            for (; n < max && !c.finished; n++) {
              const m = c.mask(max - n);
              const allowed: number[] = [];
              m.forEach((x, id) => x && allowed.push(id));
              const id = allowed[Math.floor(rng.next() * allowed.length)];
              if (tok.eog.has(id)) break;
              c.accept(id);
            }
            const text = Buffer.from(c.text).toString("utf8");
            expect(c.complete, `${sname}, ${max} tokens: ${text}`).toBe(true);
            expect(n).toBeLessThanOrEqual(max);
            expect(accepts(g.root, JSON.parse(text)), text).toBe(true);
          }
        }
      }
    });
  }

  it("a budget too small for the schema: the tokens that come closest, and no end before the text is complete", () => {
    const v = new VocabIndex(spm);
    const g = compileSchema(SCHEMAS.person); // {"name":"a","age":0,"good":true} at the shortest
    const c = new JsonConstraint(g, v);
    const need = c.closeCost;
    expect(need).toBe(Buffer.byteLength('{"name":"a","age":0,"good":true}'));
    for (let n = 0; n < 10; n++) {
      const m = c.mask(10 - n);
      expect(m[spm.eos!]).toBe(0);
      let id = -1;
      m.forEach((x, i) => x && id < 0 && (id = i));
      const before = c.closeCost;
      c.accept(id);
      expect(c.closeCost).toBeLessThan(before);
    }
    expect(c.complete).toBe(false);
    expect(c.closeCost).toBeLessThan(need);
  });

  it("tokens of several bytes: closes within a budget that is short in bytes but enough in tokens (the plan)", () => {
    // every byte, and the pieces JSON is made of in a byte-level BPE vocabulary
    const pieces = ['{"', '":"', '","', '"}', '":', ',"', "name", "age", "good", "true", "}"];
    const toks = [...Array.from({ length: 256 }, (_, b) => Uint8Array.of(b)), ...pieces.map((p) => new Uint8Array(Buffer.from(p)))];
    const tok: TokenBytes = { vocabSize: toks.length + 1, eog: new Set([toks.length]), tokenBytes: (id) => toks[id] ?? new Uint8Array(0) };
    const v = new VocabIndex(tok);
    const g = compileSchema(SCHEMAS.person); // 33 bytes at the shortest, 13 tokens
    const rng = new Rng(3);
    for (const max of [13, 14, 16, 20, 30]) {
      for (let trial = 0; trial < 20; trial++) {
        const c = new JsonConstraint(g, v);
        let n = 0;
        for (; n < max && !c.finished; n++) {
          const allowed: number[] = [];
          c.mask(max - n).forEach((x, id) => x && allowed.push(id));
          const id = allowed[Math.floor(rng.next() * allowed.length)];
          if (tok.eog.has(id)) break;
          c.accept(id);
        }
        const text = Buffer.from(c.text).toString("utf8");
        expect(c.complete, `${max} tokens: ${text}`).toBe(true);
        expect(accepts(g.root, JSON.parse(text)), text).toBe(true);
      }
    }
    // and below 13 it cannot: as close as it gets
    const c = new JsonConstraint(g, v);
    for (let n = 0; n < 12; n++) {
      let id = -1;
      c.mask(12 - n).forEach((x, i) => x && id < 0 && (id = i));
      c.accept(id);
    }
    expect(c.complete).toBe(false);
  });

  it("after a complete top-level value nothing but the end; a number may end or go on", () => {
    const v = new VocabIndex(spm);
    const c = new JsonConstraint(compileSchema({ enum: ["x"] }), v);
    for (const b of Buffer.from('"x"')) c.accept(spm.idOf(`<0x${b.toString(16).toUpperCase()}>`)!);
    expect(c.finished).toBe(true);
    expect([...c.mask(5)].reduce((a, b) => a + b, 0)).toBe(spm.eog.size);
    const d = new JsonConstraint(compileSchema({ type: "integer" }), v);
    d.accept(spm.idOf("1")!);
    const m = d.mask(5);
    expect(m[spm.eos!]).toBe(1);
    expect(m[spm.idOf("2")!]).toBe(1);
    expect(m[spm.idOf(".")!]).toBe(0);
    expect(() => new JsonConstraint(compileSchema({ type: "integer" }), v).accept(spm.eos!)).toThrow(/before the text is complete/);
  });

  it("SentencePiece: a leading space dropped after BOS still fits", () => {
    const v = new VocabIndex(spm);
    const c = new JsonConstraint(anyObjectGrammar(), v, { prev: spm.bos });
    const sp = spm.idOf("\u2581")!;
    expect(c.mask(10)[sp]).toBe(1);
    c.accept(sp); // adds nothing after BOS
    expect(c.text).toEqual([]);
  });
});

// A vocabulary the size of Qwen's or Llama 3's: every byte, then pieces of text,
// JSON punctuation and numbers, up to 150k tokens (deterministic).
function bigVocab(V: number): TokenBytes {
  const rng = new Rng(1);
  const seen = new Set<string>();
  const toks: Uint8Array[] = [];
  const add = (b: Uint8Array) => {
    const k = Buffer.from(b).toString("latin1");
    if (!seen.has(k)) (seen.add(k), toks.push(b));
  };
  for (let b = 0; b < 256; b++) add(Uint8Array.of(b));
  const letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
  const punct = ['"', "{", "}", "[", "]", ":", ",", '":', '",', '"}', "},", "],", '":"', '","', "\n", " ", "  ", "\n  ", "."];
  for (const p of punct) add(Buffer.from(p));
  while (toks.length < V - 1) {
    const r = rng.next();
    let s = r < 0.5 ? " " : "";
    if (r < 0.8) for (let n = 1 + Math.floor(rng.next() * 9); n > 0; n--) s += letters[Math.floor(rng.next() * letters.length)];
    else if (r < 0.9) s += String(Math.floor(rng.next() * 1000));
    else s += punct[Math.floor(rng.next() * punct.length)] + letters[Math.floor(rng.next() * 26)] + punct[Math.floor(rng.next() * punct.length)];
    add(Buffer.from(s));
  }
  const eos = toks.length;
  return { vocabSize: V, eog: new Set([eos]), tokenBytes: (id) => (id < toks.length ? toks[id] : new Uint8Array(0)) };
}

describe("a 150k vocabulary", () => {
  it("builds its trie once and masks in milliseconds (times printed)", () => {
    const t0 = performance.now();
    const tok = bigVocab(150_000);
    const v = new VocabIndex(tok);
    const tBuild = performance.now() - t0;
    const g = compileSchema(SCHEMAS.nested);
    const c = new JsonConstraint(g, v);
    const times: string[] = [];
    const doc = Buffer.from('{"hero":{"name":"Tim","friends":["ab"]},"mood":"happy","note":"a long note"}');
    let sum = 0, worst = 0, steps = 0;
    for (let k = 0; k < doc.length; k++) {
      const t1 = performance.now();
      const m = c.mask(1000);
      const dt = performance.now() - t1;
      (sum += dt), (worst = Math.max(worst, dt)), steps++;
      if (dt > 2 || [0, 2, 60].includes(k)) times.push(`${JSON.stringify(doc.subarray(0, k).toString())}: ${dt.toFixed(1)} ms, ${m.reduce((a, b) => a + b, 0)} allowed`);
      c.accept(doc[k]); // token id = the byte, in this vocabulary
    }
    console.log(`150k vocabulary: trie of ${v.nodes} nodes built in ${tBuild.toFixed(0)} ms; masks: mean ${(sum / steps).toFixed(1)} ms, worst ${worst.toFixed(1)} ms\n  ${times.join("\n  ")}`);
    expect(c.complete).toBe(true);
  });
});
