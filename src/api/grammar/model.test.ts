// A 260K-parameter story model, constrained, returns JSON that matches the
// schema, closed within max_tokens, greedy or sampled.

import { describe, expect, it } from "vitest";
import { Model } from "../../model/model.js";
import { generateConstrained } from "../../testing/constrained.js";
import { schemaErrors } from "../../testing/jsonschema.js";
import { STORIES_GGUF } from "../../testing/shared.js";
import { JsonState } from "./automaton.js";
import { JsonConstraint } from "./constraint.js";
import { Sampler } from "../../model/sampler.js";
import { anyObjectGrammar, compileSchema } from "./schema.js";
import { VocabIndex } from "./vocab.js";

const { model, stack } = Model.local(STORIES_GGUF, {});
const vocab = VocabIndex.fromTokenizer(model.tokenizer);

const SCHEMAS: Record<string, Record<string, unknown>> = {
  character: {
    type: "object",
    properties: { name: { type: "string", minLength: 2, maxLength: 10 }, age: { type: "integer" }, kind: { type: "boolean" } },
    required: ["name", "age", "kind"], additionalProperties: false,
  },
  story: {
    type: "object",
    properties: {
      hero: { type: "object", properties: { name: { type: "string", maxLength: 8 }, friends: { type: "array", items: { type: "string", minLength: 1, maxLength: 6 }, minItems: 1, maxItems: 2 } }, required: ["name", "friends"], additionalProperties: false },
      mood: { enum: ["happy", "sad"] },
      end: { type: ["string", "null"], maxLength: 12 },
    },
    required: ["hero", "mood"], additionalProperties: false,
  },
  scores: { type: "array", items: { type: "number" }, minItems: 1, maxItems: 3 },
  optional: { type: "object", properties: { title: { type: "string" }, pages: { type: "integer" } }, additionalProperties: false },
  free: { type: "object", properties: { id: { const: 7 } }, required: ["id"] },
  flag: { anyOf: [{ type: "boolean" }, { type: "null" }] },
};

const PROMPTS = ["Once upon a time", "Lily had a big red ball. She said"];

describe("constrained output from stories260K", () => {
  for (const [name, schema] of Object.entries(SCHEMAS)) {
    it(`${name}: valid JSON matching the schema, closed within max_tokens (greedy and sampled)`, async () => {
      const g = compileSchema(schema);
      const need = JsonState.initial(g).closeCost();
      const runs: string[] = [];
      for (const maxTokens of [...new Set([20, need, need + 4, 40])]) {
        for (const sampling of [{ temperature: 0 }, { temperature: 1, seed: 1 }, { temperature: 1, seed: 2 }, { temperature: 0.8, topP: 0.9, seed: 3 }]) {
          for (const prompt of PROMPTS) {
            const ids = model.tokenizer.encode(prompt);
            const c = new JsonConstraint(g, vocab, { prev: ids.at(-1) });
            const r = await generateConstrained(model, stack, ids, c, { ...sampling, maxTokens });
            const where = `${name}, ${maxTokens} tokens, ${JSON.stringify(sampling)}: ${r.text}`;
            expect(r.ids.length, where).toBeLessThanOrEqual(maxTokens);
            expect(Buffer.from(c.text).toString("utf8")).toBe(r.text);
            runs.push(`${maxTokens}: ${r.finish} ${JSON.stringify(r.text)}`);
            // below `need` tokens closing is not certain (tokens of several bytes often make it)
            if (maxTokens < need && r.finish === "length") {
              expect(JsonState.initial(g).stepBytes(Buffer.from(r.text)), where).not.toBeNull();
              continue;
            }
            expect(r.finish, where).toBe("stop");
            expect(schemaErrors(schema, JSON.parse(r.text)), where).toBeUndefined();
          }
        }
      }
      console.log(`${name} (closes for certain in ${need} tokens):\n  ${runs.filter((_, i) => i % 4 === 0).join("\n  ")}`);
    });
  }

  it("json_object: any object, closed within 20 tokens", async () => {
    for (const seed of [1, 2, 3, 4, 5]) {
      const ids = model.tokenizer.encode("Once upon a time");
      const c = new JsonConstraint(anyObjectGrammar(), vocab, { prev: ids.at(-1) });
      const r = await generateConstrained(model, stack, ids, c, { temperature: 1, seed, maxTokens: 20 });
      expect(r.finish).toBe("stop");
      const v = JSON.parse(r.text);
      expect(typeof v === "object" && v !== null && !Array.isArray(v), r.text).toBe(true);
    }
  });

  it("the sampler hook alone keeps in step, called as generate() would call it (logits, history)", async () => {
    const g = compileSchema(SCHEMAS.character);
    const prompt = model.tokenizer.encode("Once upon a time");
    const c = new JsonConstraint(g, vocab, { prev: prompt.at(-1) });
    const hook = c.hook(40);
    const sampler = new Sampler({ temperature: 1, seed: 5 });
    const history = [...prompt];
    const session = "hook";
    let [h] = await stack.forward([{ session, pos: 0, T: prompt.length, hidden: model.embedder.embed(prompt), lastRowOnly: true }]);
    for (let n = 0; n < 40; n++) {
      const logits = await model.head.logitsBatched(h.subarray(h.length - model.cfg.dim));
      hook(logits, history);
      const id = sampler.sample(logits, history);
      if (model.tokenizer.eog.has(id)) break;
      history.push(id);
      [h] = await stack.forward([{ session, pos: history.length - 1, T: 1, hidden: model.embedder.embed([id]) }]);
    }
    stack.dropSession(session);
    // a token is accepted at the next call: the last one may still be pending
    const pending = history.slice(prompt.length + c.accepted);
    expect(pending.length).toBeLessThanOrEqual(1);
    for (const id of pending) c.accept(id);
    const text = Buffer.from(c.text).toString("utf8");
    expect(c.complete, text).toBe(true);
    expect(schemaErrors(SCHEMAS.character, JSON.parse(text)), text).toBeUndefined();
    console.log(`hook: ${history.length - prompt.length} tokens, ${pending.length ? "ended by the budget" : "ended by EOS"}: ${text}`);
  });

  it("a budget far below what the schema needs: finish 'length', the text a prefix of a valid one, each token closer to the end", async () => {
    const g = compileSchema(SCHEMAS.story);
    const ids = model.tokenizer.encode("Once upon a time");
    const c = new JsonConstraint(g, vocab, { prev: ids.at(-1) });
    const need = c.closeCost;
    const r = await generateConstrained(model, stack, ids, c, { temperature: 0, maxTokens: 12 });
    expect(r.finish).toBe("length");
    expect(r.ids.length).toBe(12);
    expect(JsonState.initial(g).stepBytes(Buffer.from(r.text))).not.toBeNull();
    expect(c.closeCost).toBeLessThanOrEqual(need - 12); // every token went towards the end
  });
});
