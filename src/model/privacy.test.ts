// What a node recovers from the hidden states it sees, on stories260K: the
// table for issue 7's statement of what nodes can and cannot see.
import { describe, expect, it } from "vitest";
import { Model } from "./model.js";
import { argmax } from "./sampler.js";
import {
  Recovery,
  bestMetric,
  formatRecoveryByK,
  formatRecoveryPerState,
  fraction,
  hiddenStates,
  measureRecovery,
  logitLensAttack,
  nearestNeighbourAttack,
  nearestRows,
  embeddingTable,
} from "./privacy.js";
import { STORIES_GGUF, goldenIds } from "../testing/shared.js";

const BACKEND = (process.env.LAYERSWARM_KERNELS as "ref" | "native" | undefined) ?? "auto";

// Written by a person, not by the model: what a user's prompt looks like.
const PROMPTS = [
  "Tom had a small red boat. Every morning he took it to the pond behind his house and watched it float on the water.",
  "The secret password is swordfish. Do not tell anyone, not even the cat, because the cat talks to the birds.",
  "Mia and her grandpa baked cookies in the kitchen. The cookies were too hot, so they sat by the window and waited.",
];

describe("privacy: what a node can recover from hidden states (stories260K)", () => {
  const { model, stack } = Model.local(STORIES_GGUF, { backend: BACKEND });
  const layers = stack.slices[0];
  const L = model.cfg.nLayers, V = model.cfg.vocabSize, C = model.cfg.dim;
  const prompts = PROMPTS.map((p) => model.tokenizer.encode(p));
  const generated = goldenIds("1"); // "Once upon a time" (5 tokens) and 251 greedy tokens, from run.c

  const inRange = (r: Recovery) => {
    for (const s of r.perState)
      for (const sc of [s.neighbour.cosine, s.neighbour.l2, s.lens.next, s.lens.input]) {
        expect(sc.total).toBeGreaterThan(0);
        expect(fraction(sc)).toBeGreaterThanOrEqual(0);
        expect(fraction(sc)).toBeLessThanOrEqual(1);
      }
  };

  it("prints the table; the first stage's embedding rows invert exactly (K = 0: 100%)", () => {
    const t0 = performance.now();
    const onPrompts = measureRecovery(model, layers, prompts);
    const onGenerated = measureRecovery(model, layers, [generated]);
    const all = measureRecovery(model, layers, [...prompts, generated]);
    console.log(
      `stories260K, L = ${L} layers; ${all.tokens} tokens (${onPrompts.tokens} human-written prompt tokens, ${onGenerated.tokens} of golden 1) in ${(performance.now() - t0).toFixed(0)} ms\n` +
        `\nall text, by K (the gateway keeps K layers at the front and K at the back):\n${formatRecoveryByK(all)}` +
        `\n\nhuman-written prompts only:\n${formatRecoveryByK(onPrompts)}` +
        `\n\nmodel-generated text only (golden 1):\n${formatRecoveryByK(onGenerated)}` +
        `\n\nall text, every hidden state (j = layers run before it):\n${formatRecoveryPerState(all)}\n`,
    );
    expect(all.byK.map((k) => k.K)).toEqual([0, 1, 2, 4]);
    expect(all.tokens).toBe(prompts.reduce((a, p) => a + p.length, 0) + generated.length);
    expect(all.tokens).toBeGreaterThan(300);
    for (const r of [onPrompts, onGenerated, all]) {
      inRange(r);
      const k0 = r.byK[0].firstInput.neighbour;
      expect(fraction(k0.cosine)).toBe(1);
      expect(fraction(k0.l2)).toBe(1);
      expect(bestMetric(k0).fraction).toBe(1);
      // K = 0 at the back is the last layer's output itself
      expect(r.byK[0].lastOutput).toBe(r.perState[L]);
      expect(r.byK.at(-1)!.firstInput.j).toBe(4);
      expect(r.byK.at(-1)!.lastOutput.j).toBe(L - 4);
    }
  });

  it("the logit lens on the last layer's output is the model's own greedy prediction, so it reveals every generated token", async () => {
    // independent of privacy.ts: all layers in one forward call, then the head
    const greedy = async (ids: number[]) => {
      const [h] = await stack.forward([{ session: `ref-${ids.length}`, pos: 0, T: ids.length, hidden: model.embedder.embed(ids) }]);
      stack.dropSession(`ref-${ids.length}`);
      const lg = model.head.logits(h, ids.length);
      return ids.map((_, t) => argmax(lg, t * V, V));
    };
    let hits = 0, total = 0;
    for (const ids of [...prompts, generated]) {
      const g = await greedy(ids);
      for (let t = 0; t + 1 < ids.length; t++, total++) if (g[t] === ids[t + 1]) hits++;
    }
    const r = measureRecovery(model, layers, [...prompts, generated]);
    expect(r.perState[L].lens.next).toEqual({ hits, total });
    // golden 1 was generated greedily by run.c: from the last prompt position on,
    // the last stage's output names every generated token
    const g = await greedy(generated);
    expect(g.slice(4, -1)).toEqual(generated.slice(5));
    const only = measureRecovery(model, layers, [generated]).perState[L].lens.next;
    expect(only.hits).toBeGreaterThanOrEqual(generated.length - 5);
  });

  it("layer by layer is bit for bit the single forward pass, and the measuring session is dropped", async () => {
    const ids = prompts[0];
    const states = hiddenStates(model.embedder, layers, ids);
    expect(states).toHaveLength(L + 1);
    expect(states[0]).toEqual(model.embedder.embed(ids));
    const [h] = await stack.forward([{ session: "whole", pos: 0, T: ids.length, hidden: model.embedder.embed(ids) }]);
    stack.dropSession("whole");
    expect(states[L]).toEqual(h);
    expect(layers.sessions.size).toBe(0);
    // a row scaled up (as the residual stream grows) still points at its token
    const s = nearestNeighbourAttack(embeddingTable(model.embedder), states[0].map((x) => x * 10), ids, C);
    expect(fraction(s.cosine)).toBe(1);
  });
});

describe("nearest rows", () => {
  // table (3, 2): e0 = (1, 0), e1 = (3, 3), e2 = (0, -1)
  const table = Float32Array.of(1, 0, 3, 3, 0, -1);
  it("cosine picks the direction, L2 the distance", () => {
    const rows = Float32Array.of(5, 0, 0, -0.5, 1, 1); // (3, 2)
    expect([...nearestRows(table, rows, 2, "cosine")]).toEqual([0, 2, 1]);
    expect([...nearestRows(table, rows, 2, "l2")]).toEqual([1, 2, 0]);
    const s = nearestNeighbourAttack(table, rows, [0, 2, 1], 2);
    expect(s).toEqual({ cosine: { hits: 3, total: 3 }, l2: { hits: 1, total: 3 } });
    expect(bestMetric(s)).toEqual({ metric: "cosine", fraction: 1 });
    expect(bestMetric({ cosine: { hits: 1, total: 4 }, l2: { hits: 2, total: 4 } })).toEqual({ metric: "l2", fraction: 0.5 });
  });
  it("the logit lens compares each row's argmax with the next token and with its own", () => {
    // a head whose logits are the row itself (V = C = 2)
    const head = { logits: (h: Float32Array) => h };
    const rows = Float32Array.of(1, 0, 0, 1, 0, 1); // argmax 0, 1, 1
    expect(logitLensAttack(head, rows, [0, 1, 1], 2)).toEqual({ next: { hits: 1, total: 2 }, input: { hits: 3, total: 3 } });
    expect(logitLensAttack(head, rows, [9, 0, 1], 2)).toEqual({ next: { hits: 2, total: 2 }, input: { hits: 1, total: 3 } });
  });
});
