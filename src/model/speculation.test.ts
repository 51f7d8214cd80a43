import { describe, expect, it } from "vitest";
import { Drafter, GenerateOptions, LayerStack, Model, NgramDrafter, generate, speculationStats } from "./model.js";
import { STORIES_GGUF, goldenIds } from "../testing/shared.js";

const BACKEND = (process.env.LAYERSWARM_KERNELS as "ref" | "native" | undefined) ?? "auto";
const loaded = Model.local(STORIES_GGUF, { backend: BACKEND });
// As a swarm node is: a step must start where the session's cache ends
// (positions only grow; going back takes a rollback), so a rollback to the
// wrong position fails here instead of being silently rewritten
const strict: LayerStack = {
  forward(steps, signal) {
    for (const s of steps) {
      const have = loaded.stack.slices[0].sessions.get(s.session)?.length ?? 0;
      if (s.pos !== have) throw new Error(`a step at ${s.pos} of session ${s.session}, whose cache holds ${have}`);
    }
    return loaded.stack.forward(steps, signal);
  },
  dropSession: (id) => loaded.stack.dropSession(id),
  rollback: (id, pos) => loaded.stack.rollback(id, pos),
};
const local = { model: loaded.model, stack: strict };

async function run(stack: LayerStack, prompt: number[], opts: GenerateOptions) {
  const out: { id: number; pos: number; logprob?: number }[] = [];
  for await (const t of generate(local.model, stack, prompt, opts)) out.push({ id: t.id, pos: t.pos, logprob: t.logprob });
  return out;
}

// Counts what the options drafted and accepted (speculationStats is per process).
async function counted<T>(f: () => Promise<T>): Promise<{ r: T; drafted: number; accepted: number }> {
  const d0 = speculationStats.drafted, a0 = speculationStats.accepted;
  const r = await f();
  return { r, drafted: speculationStats.drafted - d0, accepted: speculationStats.accepted - a0 };
}

// Drafts the given sequence's continuation (all accepted while it is right), or garbage.
const oracle = (seq: number[]): Drafter => ({ draft: (h, k) => seq.slice(h.length, h.length + k) });
const wrong: Drafter = { draft: (h, k) => Array.from({ length: k }, (_, i) => (h.length * 7 + i * 13) % 512) };

describe("n-gram drafter (prompt lookup)", () => {
  it("continues the latest earlier occurrence of the longest suffix", () => {
    const d = new NgramDrafter(3, 1);
    expect(d.draft([5, 6, 7, 8, 1, 5, 6, 7, 9, 5, 6, 7], 3)).toEqual([9, 5, 6]); // latest "5 6 7" is followed by 9
    expect(d.draft([1, 2, 3, 4], 3)).toEqual([]);
    expect(d.draft([4, 1, 2, 4], 5)).toEqual([1, 2, 4]); // stops at the end of the history
    expect(new NgramDrafter(3, 2).draft([4, 1, 2, 4], 5)).toEqual([]); // a 1-gram is not enough
  });
});

describe("speculative decoding gives exactly the tokens of plain decoding", () => {
  const g1 = goldenIds("1"), g4 = goldenIds("4");

  it("greedy: golden 1 and 4 with n-gram drafts of any length, and drafts were accepted", async () => {
    for (const k of [1, 3, 8]) {
      const { r, drafted, accepted } = await counted(() => run(local.stack, g1.slice(0, 5), { maxTokens: g1.length - 5, draftTokens: k }));
      expect([...g1.slice(0, 5), ...r.map((t) => t.id)]).toEqual(g1);
      expect(r.map((t) => t.pos)).toEqual(r.map((_, i) => 5 + i));
      expect(drafted).toBeGreaterThan(0);
      expect(accepted).toBeGreaterThan(0);
      expect(accepted).toBeLessThan(drafted); // both paths: accepted and rolled back
    }
    const r4 = await run(local.stack, g4.slice(0, 1), { maxTokens: g4.length - 1, draftTokens: 4 });
    expect([g4[0], ...r4.map((t) => t.id)]).toEqual(g4);
  });

  it("greedy: drafts all right (whole steps accepted) or all wrong change nothing", async () => {
    const a = await counted(() => run(local.stack, g1.slice(0, 5), { maxTokens: g1.length - 5, draftTokens: 6, drafter: oracle(g1) }));
    expect([...g1.slice(0, 5), ...a.r.map((t) => t.id)]).toEqual(g1);
    expect(a.accepted).toBe(a.drafted);
    const b = await counted(() => run(local.stack, g1.slice(0, 5), { maxTokens: 60, draftTokens: 5, drafter: wrong }));
    expect(b.r.map((t) => t.id)).toEqual(g1.slice(5, 65));
    expect(b.drafted).toBeGreaterThan(100);
  });

  it("sampled with a seed: the same text with speculation off and on, for several k and drafters", async () => {
    const prompt = g1.slice(0, 5);
    const base: GenerateOptions = { maxTokens: 120, temperature: 0.9, topP: 0.95, seed: 1234, frequencyPenalty: 0.3, logprobs: 2 };
    const plain = await run(local.stack, prompt, { ...base, speculate: "off" });
    expect(new Set(plain.map((t) => t.id)).size).toBeGreaterThan(20);
    const other = await run(local.stack, prompt, { ...base, seed: 4321, speculate: "off" });
    expect(other.map((t) => t.id)).not.toEqual(plain.map((t) => t.id)); // the seed matters
    const seq = [...prompt, ...plain.map((t) => t.id)];
    for (const o of [{ draftTokens: 1 }, { draftTokens: 4 }, { draftTokens: 7 }, { draftTokens: 4, drafter: new NgramDrafter(3, 1) }, { draftTokens: 5, drafter: oracle(seq) }, { draftTokens: 3, drafter: wrong }]) {
      const { r, accepted } = await counted(() => run(local.stack, prompt, { ...base, ...o }));
      expect(r).toEqual(plain);
      if (o.drafter === undefined || o.drafter instanceof NgramDrafter) expect(accepted).toBeGreaterThan(0);
    }
  });

  it("the logits hook and logits callback see exactly what they see without speculation", async () => {
    const prompt = g1.slice(0, 5);
    const trace = async (speculate: "off" | "ngram") => {
      const calls: string[] = [];
      const toks = await run(local.stack, prompt, {
        maxTokens: 80, temperature: 0.7, seed: 9, speculate, draftTokens: 4,
        logitsHook: (l, h) => { calls.push(`hook ${h.length} ${l[0]}`); l[5] = -Infinity; },
        onLogits: (pos, l) => calls.push(`logits ${pos} ${l[1]}`),
      });
      return { calls, toks };
    };
    const off = await trace("off"), on = await trace("ngram");
    expect(on.toks).toEqual(off.toks);
    expect(on.calls).toEqual(off.calls);
  });
});

describe("rollback", () => {
  it("leaves a session's cache and KV accounting exactly as if the rows had never been sent", async () => {
    const { model, stack } = Model.local(STORIES_GGUF, { backend: BACKEND, slices: [{ start: 0, end: 2 }, { start: 2, end: 5 }] });
    const toks = goldenIds("1").slice(0, 60);
    const emb = (a: number, b: number) => model.embedder.embed(toks.slice(a, b));
    // "a" is sent 40 rows and rolled back to 13; "b" is only ever sent 13
    await stack.forward([{ session: "a", pos: 0, T: 10, hidden: emb(0, 10) }]);
    await stack.forward([{ session: "a", pos: 10, T: 30, hidden: emb(10, 40) }]);
    const used40 = stack.slices.map((s) => s.budget.usedBytes);
    await stack.rollback("a", 13);
    await stack.forward([{ session: "b", pos: 0, T: 10, hidden: emb(0, 10) }]);
    await stack.forward([{ session: "b", pos: 10, T: 3, hidden: emb(10, 13) }]);
    for (const [i, s] of stack.slices.entries()) {
      const a = s.sessions.get("a")!, b = s.sessions.get("b")!;
      expect([a.length, a.capacity, a.bytes]).toEqual([b.length, b.capacity, b.bytes]);
      expect(s.budget.usedBytes).toBe(2 * b.bytes);
      expect(used40[i]).toBeGreaterThan(b.bytes * 2); // the rollback released memory
      for (let l = 0; l < a.nLayers; l++) {
        expect(Buffer.from(a.k[l].buffer).equals(Buffer.from(b.k[l].buffer))).toBe(true);
        expect(Buffer.from(a.v[l].buffer).equals(Buffer.from(b.v[l].buffer))).toBe(true);
      }
    }
    // and both go on alike
    const [ha] = await stack.forward([{ session: "a", pos: 13, T: 5, hidden: emb(13, 18) }]);
    const [hb] = await stack.forward([{ session: "b", pos: 13, T: 5, hidden: emb(13, 18) }]);
    expect(Buffer.from(ha.buffer).equals(Buffer.from(hb.buffer))).toBe(true);
    // within one capacity: positions rolled back are zeroed, as never written
    await stack.rollback("a", 16);
    await stack.rollback("b", 16);
    await stack.forward([{ session: "a", pos: 16, T: 1, hidden: emb(16, 17) }]);
    await stack.rollback("a", 16);
    for (const s of stack.slices) {
      const a = s.sessions.get("a")!, b = s.sessions.get("b")!;
      expect([a.length, a.capacity]).toEqual([b.length, b.capacity]);
      for (let l = 0; l < a.nLayers; l++) expect(Buffer.from(a.k[l].buffer).equals(Buffer.from(b.k[l].buffer))).toBe(true);
    }
    await stack.rollback("a", 0);
    stack.dropSession("b");
    for (const s of stack.slices) expect(s.budget.usedBytes).toBe(0);
  });
});
