import { describe, expect, it } from "vitest";
import { Model, generate } from "./model.js";
import { decodeAll } from "../tokenizer/index.js";
import { STORIES_GGUF, firstDiff, goldenIds, goldenLogits, goldenText } from "../testing/shared.js";
import { LayerRange } from "./config.js";
import { Step } from "./runtime.js";

const BACKEND = (process.env.LAYERSWARM_KERNELS as "ref" | "native" | undefined) ?? "auto";

// run.c's -n counts positions: n positions produce n - (prompt - 1) new tokens.
async function runGolden(path: string, _name: string, prompt: string, n: number, slices?: LayerRange[], chunkSize?: number) {
  const { model, stack } = Model.local(path, { backend: BACKEND, slices });
  const ids = model.tokenizer.encode(prompt);
  const out: number[] = [];
  for await (const t of generate(model, stack, ids, { maxTokens: n - ids.length + 1, chunkSize })) out.push(t.id);
  return { model, ids, out };
}

describe("stories260K against llama2.c's run.c", () => {
  it("golden 1: 'Once upon a time', 256 positions, greedy", async () => {
    const { model, ids, out } = await runGolden(STORIES_GGUF, "1", "Once upon a time", 256);
    expect([...ids, ...out]).toEqual(goldenIds("1"));
    expect("Once upon a time" + decodeAll(model.tokenizer, out, ids.at(-1)) + "\n").toBe(goldenText("1"));
  });

  it("the scalar reference kernels alone (the specification) also reproduce golden 1", async () => {
    const { model, stack } = Model.local(STORIES_GGUF, { backend: "ref" });
    expect(model.kernels.name).toBe("ref");
    const out: number[] = [];
    for await (const t of generate(model, stack, [1, 403, 407, 261, 378], { maxTokens: 252 })) out.push(t.id);
    expect([1, 403, 407, 261, 378, ...out]).toEqual(goldenIds("1"));
  });

  it("golden 4: empty prompt, 128 positions", async () => {
    const { model, ids, out } = await runGolden(STORIES_GGUF, "4", "", 128);
    expect([...ids, ...out]).toEqual(goldenIds("4"));
    expect(decodeAll(model.tokenizer, out, ids.at(-1)) + "\n").toBe(goldenText("4"));
  });

  it("first logits match run.c within 1e-4", async () => {
    const { model, stack } = Model.local(STORIES_GGUF, { backend: BACKEND });
    const ids = model.tokenizer.encode("Once upon a time");
    expect(ids).toEqual([1, 403, 407, 261, 378]);
    const [h] = await stack.forward([{ session: "s", pos: 0, T: ids.length, hidden: model.embedder.embed(ids) }]);
    const lg = model.head.logits(h, ids.length);
    for (const g of goldenLogits()) {
      const row = lg.subarray(g.pos * model.cfg.vocabSize, (g.pos + 1) * model.cfg.vocabSize);
      g.logits.forEach((v, i) => expect(Math.abs(row[i] - v)).toBeLessThan(1e-4));
      let am = 0;
      for (let i = 1; i < row.length; i++) if (row[i] > row[am]) am = i;
      expect(am).toBe(g.argmax);
    }
  });
});

// All logits of a fixed token sequence, computed one way or another.
async function allLogits(opts: { slices?: LayerRange[]; chunk: number; threads?: number }): Promise<Float32Array> {
  const { model, stack } = Model.local(STORIES_GGUF, { backend: BACKEND, slices: opts.slices, threads: opts.threads });
  const ids = goldenIds("1").slice(0, 100);
  const V = model.cfg.vocabSize, C = model.cfg.dim;
  const out = new Float32Array(ids.length * V);
  for (let p = 0; p < ids.length; p += opts.chunk) {
    const toks = ids.slice(p, p + opts.chunk);
    const [h] = await stack.forward([{ session: "a", pos: p, T: toks.length, hidden: model.embedder.embed(toks) }]);
    out.set(model.head.logits(h, toks.length), p * V);
    expect(h.length).toBe(toks.length * C);
  }
  model.kernels.close();
  return out;
}

describe("exactness: bit-identical whatever the split, chunking, batching, threads", () => {
  it("every split of the 5 layers gives the whole model's logits", async () => {
    const whole = await allLogits({ chunk: 7 });
    const splits: LayerRange[][] = [
      [{ start: 0, end: 2 }, { start: 2, end: 5 }],
      [0, 1, 2, 3, 4].map((i) => ({ start: i, end: i + 1 })),
      [{ start: 0, end: 4 }, { start: 4, end: 5 }],
      [{ start: 0, end: 1 }, { start: 1, end: 3 }, { start: 3, end: 5 }],
    ];
    for (const slices of splits) expect(firstDiff(await allLogits({ slices, chunk: 7 }), whole)).toBeUndefined();
  });

  it("prefill in chunks of 1, 7 and 64 equals token-by-token decoding", async () => {
    const one = await allLogits({ chunk: 1 });
    expect(firstDiff(await allLogits({ chunk: 7 }), one)).toBeUndefined();
    expect(firstDiff(await allLogits({ chunk: 64 }), one)).toBeUndefined();
  });

  it("1 and 2 threads give identical bits", async () => {
    expect(firstDiff(await allLogits({ chunk: 16, threads: 2 }), await allLogits({ chunk: 16, threads: 1 }))).toBeUndefined();
  });

  it("a batch of 4 sessions gives each the results it gets alone", async () => {
    const { model, stack } = Model.local(STORIES_GGUF, { backend: BACKEND });
    const seqs = [goldenIds("1").slice(0, 40), goldenIds("4").slice(0, 33), goldenIds("1").slice(10, 60), [1, 2, 3, 400, 401, 402]];
    const alone: Float32Array[][] = [];
    for (const [i, s] of seqs.entries()) {
      const rows: Float32Array[] = [];
      for (let p = 0; p < s.length; p++) rows.push((await stack.forward([{ session: `alone${i}`, pos: p, T: 1, hidden: model.embedder.embed([s[p]]) }]))[0]);
      alone.push(rows);
    }
    // batched: sessions advance together with different positions and chunk sizes
    const pos = seqs.map(() => 0);
    const got: Float32Array[][] = seqs.map(() => []);
    for (let round = 0; pos.some((p, i) => p < seqs[i].length); round++) {
      const steps: Step[] = [];
      seqs.forEach((s, i) => {
        const T = Math.min(s.length - pos[i], 1 + ((round + i) % 3));
        if (T > 0) steps.push({ session: `b${i}`, pos: pos[i], T, hidden: model.embedder.embed(s.slice(pos[i], pos[i] + T)) });
      });
      const outs = await stack.forward(steps);
      steps.forEach((st, j) => {
        const i = Number(st.session.slice(1));
        for (let t = 0; t < st.T; t++) got[i].push(outs[j].slice(t * model.cfg.dim, (t + 1) * model.cfg.dim));
        pos[i] += st.T;
      });
    }
    seqs.forEach((_, i) => alone[i].forEach((row, p) => expect(firstDiff(got[i][p], row), `session ${i} pos ${p}`).toBeUndefined()));
  });
});

describe("limits", () => {
  it("a context overflow is a clear error and the runtime keeps serving", async () => {
    const { model, stack } = Model.local(STORIES_GGUF, { backend: BACKEND, maxContext: 16 });
    const h = model.embedder.embed(Array(10).fill(400));
    await stack.forward([{ session: "a", pos: 0, T: 10, hidden: h }]);
    await expect(stack.forward([{ session: "a", pos: 10, T: 10, hidden: model.embedder.embed(Array(10).fill(400)) }])).rejects.toThrow(/positions up to 20 exceed the context length 16/);
    await expect(stack.forward([{ session: "b", pos: 3, T: 1, hidden: model.embedder.embed([5]) }])).rejects.toThrow(/position 3 but the cache holds 0/);
    const [ok] = await stack.forward([{ session: "a", pos: 10, T: 2, hidden: model.embedder.embed([400, 401]) }]);
    expect(ok.length).toBe(2 * model.cfg.dim);
    await expect((async () => { for await (const _ of generate(model, stack, Array(600).fill(400))) void _; })()).rejects.toThrow(/context holds 512/);
  });

  it("KV memory is bounded and accounted", async () => {
    const { model, stack } = Model.local(STORIES_GGUF, { backend: BACKEND, kvBudgetBytes: 200_000 });
    const slice = stack.slices[0];
    await stack.forward([{ session: "a", pos: 0, T: 20, hidden: model.embedder.embed(Array(20).fill(7)) }]);
    expect(slice.budget.usedBytes).toBe(32 * 32 * 4 * 2 * 5); // capacity 32 positions (blocks of 16) × kvDim 32 × f32 × (k, v) × 5 layers
    await expect(stack.forward([{ session: "b", pos: 0, T: 200, hidden: model.embedder.embed(Array(200).fill(7)) }])).rejects.toThrow(/KV cache memory exhausted/);
    stack.dropSession("a");
    expect(slice.budget.usedBytes).toBe(0);
    expect(() => model.embedder.embed([512])).toThrow(/token id 512 is outside the vocabulary/);
  });
});
