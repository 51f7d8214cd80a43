import { describe, expect, it } from "vitest";
import { JsonState } from "./automaton.js";
import { Grammar, anyObjectGrammar, compileSchema } from "./schema.js";

const enc = (s: string) => new Uint8Array(Buffer.from(s, "utf8"));

// the state after `text`, or the byte offset where the automaton refused it
function run(g: Grammar, text: string | Uint8Array): { state: JsonState | null; at: number } {
  const bytes = typeof text === "string" ? enc(text) : text;
  let s: JsonState | null = JsonState.initial(g);
  for (let i = 0; i < bytes.length; i++) {
    s = s.step(bytes[i]);
    if (!s) return { state: null, at: i };
  }
  return { state: s, at: -1 };
}
const whole = (g: Grammar, text: string) => run(g, text).state?.complete === true;
const prefix = (g: Grammar, text: string) => run(g, text).state !== null;
const refusedAt = (g: Grammar, text: string | Uint8Array) => run(g, text).at;

// closeCost() is the shortest completion's length exactly when: it is 0 just
// where the text is complete, no byte lowers it by more than 1 (so no
// completion is shorter), and some byte always lowers it by 1 (so one is that short).
function checkCloseCost(s: JsonState, where: string): void {
  let cur = s;
  for (let steps = 0; ; steps++) {
    const c = cur.closeCost();
    expect(c === 0, `${where}: cost ${c}, complete ${cur.complete}`).toBe(cur.complete);
    let down: JsonState | null = null;
    for (let b = 0; b < 256; b++) {
      const t = cur.step(b);
      if (!t) continue;
      expect(t.closeCost(), `${where} + ${steps} bytes, then byte ${b}`).toBeGreaterThanOrEqual(c - 1);
      if (!down && t.closeCost() === c - 1) down = t;
    }
    if (c === 0) return;
    expect(down, `${where} + ${steps} bytes: no byte brings the cost down`).not.toBeNull();
    cur = down!;
  }
}

const PERSON = {
  type: "object",
  properties: {
    name: { type: "string", minLength: 2, maxLength: 5 },
    age: { type: "integer" },
    tags: { type: "array", items: { enum: ["a", "bb", 12, 1, null] }, minItems: 1, maxItems: 2 },
    pet: { type: ["object", "null"], properties: { kind: { const: "cat" } }, required: ["kind"], additionalProperties: false },
  },
  required: ["name", "age"],
  additionalProperties: false,
};

describe("the JSON automaton, any object (json_object)", () => {
  const g = anyObjectGrammar();
  it("accepts valid documents, whitespace between tokens, and says when they are complete", () => {
    for (const t of ['{}', '{"a":1}', '{ "a" : [1, 2.5e-3, -0, true, false, null, "x"], "b": {"c": {}} }', '{"é\\n\\"":"é😀\\/\\u00e9"}', '{"a":[]}', '{"":0}'])
      expect(whole(g, t), t).toBe(true);
    expect(run(g, '{"a":1}').state!.finished).toBe(true);
    expect(whole(g, '{"a":1')).toBe(false);
    expect(prefix(g, '{"a":1')).toBe(true);
  });

  it("refuses invalid JSON at the first wrong byte", () => {
    const cases: [string, number][] = [
      ['[1]', 0], // json_object: an object only
      ['{"a":01}', 6], // leading zero
      ['{"a":1,}', 7], // trailing comma
      ['{,', 1],
      ['{"a" 1}', 5],
      ['{"a":1}}', 7], // nothing after the document
      ['{"a":1} ', 7], // not even whitespace: the end of generation is forced
      ['{"a":"\\x"}', 7], // unknown escape
      ['{"a":"\\ud83d"}', 9], // surrogate escapes are refused (raw UTF-8 instead)
      ['{"a":1.}', 7],
      ['{"a":1e}', 7],
      ['{"a":1e123}', 9], // at most 2 exponent digits: every number stays finite
      ['{"a":tru}', 8],
      ['{"a":-}', 6],
      ['{"\\u0061":1}', 3], // in keys, \u and \/ only where a declared name is spelled so (JSON.stringify never does)
      ['{"\\/":1}', 3],
    ];
    for (const [t, at] of cases) expect(refusedAt(g, t), t).toBe(at);
    // raw control characters and invalid UTF-8 inside strings
    expect(refusedAt(g, Uint8Array.from([...enc('{"a":"'), 0x0a]))).toBe(6);
    expect(refusedAt(g, Uint8Array.from([...enc('{"a":"'), 0xc0, 0x80]))).toBe(6); // overlong
    expect(refusedAt(g, Uint8Array.from([...enc('{"a":"'), 0xed, 0xa0, 0x80]))).toBe(7); // a surrogate in UTF-8
    expect(refusedAt(g, Uint8Array.from([...enc('{"a":"'), 0xe2, 0x82, 0x22]))).toBe(8); // truncated sequence
    expect(refusedAt(g, Uint8Array.from([...enc('{"a":"'), 0xf4, 0x90]))).toBe(7); // above U+10FFFF
    expect(whole(g, Buffer.concat([enc('{"a":"'), Buffer.from([0xf0, 0x9f, 0x98, 0x80]), enc('"}')]).toString())).toBe(true);
  });

  it("whitespace: none, one space, or a newline and an indent (at most maxIndent)", () => {
    const g2 = anyObjectGrammar(3);
    expect(whole(g2, '{ "a": [1,\n   2\n],\n "b" : {}}')).toBe(true);
    expect(whole(g2, '\n{"a":1}')).toBe(true);
    expect(refusedAt(g2, "{  ")).toBe(2); // two spaces
    expect(refusedAt(g2, "{\n    ")).toBe(5); // an indent of 4
    expect(refusedAt(g2, "{ \n")).toBe(2);
    expect(refusedAt(g2, "{\n\n")).toBe(2);
    expect(refusedAt(g2, "{\r\n")).toBe(1);
    expect(refusedAt(g2, '{"a":1  ')).toBe(7); // also after a number
    expect(refusedAt(compileSchema({ type: "object" }, { maxIndent: 0 }), "{\n ")).toBe(2);
  });
});

describe("the JSON automaton, a schema", () => {
  const g = compileSchema(PERSON);
  it("accepts what matches", () => {
    for (const t of ['{"name":"ab","age":3}', '{"age":-7,"name":"abcde","tags":["a",12]}', '{"name":"é😀","age":0,"pet":null}', '{"name":"xy","age":1,"pet":{"kind":"cat"},"tags":[1]}'])
      expect(whole(g, t), t).toBe(true);
  });

  it("refuses unknown keys, repeated keys, missing required keys, and values out of bounds", () => {
    const cases: [string, number][] = [
      ['{"nam":', 5], // a key that is not declared (additionalProperties: false)
      ['{"nb', 3],
      ['{"name":"ab","name"', 14], // no key twice
      ['{"name":"ab"}', 12], // age is required
      ['{"name":"a"', 10], // minLength 2
      ['{"name":"abcdef', 14], // maxLength 5 (code points)
      ['{"age":1.5', 8], // integer
      ['{"age":1,"tags":[]', 17], // minItems 1
      ['{"age":1,"tags":["a",1,', 22], // maxItems 2
      ['{"age":1,"tags":["c"', 18], // enum
      ['{"age":1,"tags":[12', -1], // 12 or 1... still open
      ['{"age":1,"tags":[123', 19],
      ['{"age":1,"pet":{}', 16], // kind is required
      ['{"age":1,"pet":{"kind":"dog"', 24], // const
      ['{"age":1,"pet":"', 15], // object or null
    ];
    for (const [t, at] of cases) expect(refusedAt(g, t), t).toBe(at);
    expect(whole(g, '{"age":1,"name":"ab","tags":[1]}')).toBe(true);
    expect(whole(g, '{"age":1,"name":"ab","tags":[12]}')).toBe(true);
  });

  it("counts string lengths in code points", () => {
    const s = compileSchema({ type: "string", minLength: 2, maxLength: 2 });
    expect(whole(s, '"é😀"')).toBe(true);
    expect(whole(s, '"\\n\\u0041"')).toBe(true);
    expect(prefix(s, '"é😀x')).toBe(false);
    expect(prefix(s, '"é"')).toBe(false);
  });

  it("top-level scalars: a number may end or go on; a literal ends itself", () => {
    const n = compileSchema({ type: "number" });
    const st = run(n, "12").state!;
    expect(st.complete).toBe(true);
    expect(st.finished).toBe(false);
    expect(st.step(0x33)!.complete).toBe(true);
    expect(run(compileSchema({ enum: ["x", 3] }), '"x"').state!.finished).toBe(true);
    expect(run(compileSchema({ type: "integer" }), "-").state!.complete).toBe(false);
  });

  it("additional properties given a schema, and declared ones beside them", () => {
    const h = compileSchema({ type: "object", properties: { n: { type: "integer" } }, additionalProperties: { type: "string" }, required: ["n", "m"] });
    expect(whole(h, '{"m":"x","n":1}')).toBe(true);
    // a declared name is spelled as JSON.stringify spells it: "n" cannot hide as "\u006e" and escape its schema
    expect(refusedAt(h, '{"\\u006e":"x"}')).toBe(3);
    const q = compileSchema({ type: "object", properties: { 'a"\u0001': { type: "null" } }, required: ['a"\u0001'] });
    expect(whole(q, '{"a\\"\\u0001":null}')).toBe(true);
    expect(refusedAt(q, '{"a\\"\\u0001":1')).toBe(13);
    expect(refusedAt(q, '{"a\\"\\u0002')).toBe(10); // left the declared spelling inside a \u escape
    expect(whole(q, '{"a\\"\\n":1,"a\\"\\u0001":null}')).toBe(true);
    expect(refusedAt(h, '{"m":1')).toBe(5);
    expect(refusedAt(h, '{"n":"')).toBe(5);
    expect(refusedAt(h, '{"n":1}')).toBe(6); // m is required
  });

  it("anyOf with branches of different types", () => {
    const h = compileSchema({ anyOf: [{ type: "string", maxLength: 1 }, { type: "null" }, { type: "array", items: { type: "integer" } }] });
    for (const t of ['"a"', "null", "[1,2]"]) expect(whole(h, t), t).toBe(true);
    expect(prefix(h, '"ab')).toBe(false);
    expect(prefix(h, "1")).toBe(false);
  });

  it("the closing cost is the shortest completion's length, from every prefix", () => {
    const schemas = [
      PERSON,
      { type: "object" },
      { type: "array", items: { type: "object", properties: { a: { type: "string", minLength: 3 }, bb: { type: "boolean" } }, required: ["bb"] }, minItems: 2 },
      { type: "object", properties: { x: { type: "number" }, k: { enum: ["long value", 1] } }, required: ["k"], additionalProperties: { type: "array", minItems: 1, items: { type: "null" } } },
    ];
    const docs = [
      '{"name":"abc","age":12,"tags":["bb",12],"pet":{"kind":"cat"}}',
      '{"a":[1,{"b":"c"}], "k\\te\\"y" : "é😀" ,"d":-1.5e3}',
      '[{"a":"xyz","bb":true},{"bb":false}]',
      '{"k":"long value","x":2,"zz":[null]}',
    ];
    schemas.forEach((schema, i) => {
      const g = compileSchema(schema);
      const bytes = enc(docs[i]);
      let s: JsonState = JsonState.initial(g);
      for (let k = 0; k <= bytes.length; k++) {
        checkCloseCost(s, docs[i].slice(0, k));
        if (k < bytes.length) s = s.step(bytes[k])!;
        expect(s, docs[i].slice(0, k + 1)).not.toBeNull();
      }
      expect(s.complete).toBe(true);
    });
  });
});
