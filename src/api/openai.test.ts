// What real clients ask for beyond plain text, through the official openai
// client against stories260K: logprobs (streamed and not), n > 1, penalties,
// logit_bias, several prompts in one request, embeddings. The references are
// computed here from the model's raw logits and hidden states, with the
// OpenAI formulas written out again, not by the server's code; and the same
// requests through an in-memory swarm give the same answers as the local stack.

import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readGGUF } from "../format/gguf.js";
import { Model, LayerStack, generate } from "../model/model.js";
import { loadVector } from "../model/weights.js";
import { MemSwarm, memSwarm } from "../testing/memswarm.js";
import { STORIES_GGUF } from "../testing/shared.js";
import { decodeAll } from "../tokenizer/index.js";
import { ApiServer } from "./server.js";

const PROMPT = "Once upon a time";
let local: { model: Model; stack: LayerStack };
let api: ApiServer;
let client: OpenAI;

beforeAll(async () => {
  local = Model.local(STORIES_GGUF);
  api = new ApiServer(local.model, local.stack, { modelId: "m" });
  client = new OpenAI({ baseURL: `http://127.0.0.1:${await api.listen(0)}/v1`, apiKey: "none", maxRetries: 0 });
});
afterAll(() => api?.close());

const ids = (text: string) => local.model.tokenizer.encode(text);

// the model's raw logits (V,) after `context`, in f64
async function rawLogits(context: number[]): Promise<Float64Array> {
  let last: Float32Array | undefined;
  for await (const _ of generate(local.model, local.stack, context, { maxTokens: 1, onLogits: (pos, l) => { if (pos === context.length - 1) last = Float32Array.from(l); } })) void _;
  return Float64Array.from(last!);
}

function logSoftmax(l: Float64Array): Float64Array {
  const max = Math.max(...l);
  const lse = max + Math.log(l.reduce((a, x) => a + Math.exp(x - max), 0));
  return l.map((x) => x - lse);
}

// Greedy decoding with OpenAI's documented adjustment, written out here:
// mu[j] - c[j] * frequency_penalty - (c[j] > 0) * presence_penalty + logit_bias[j],
// c[j] = times token j was generated so far. Returns the tokens and their logprobs.
async function referenceGreedy(prompt: number[], n: number, o: { frequency?: number; presence?: number; bias?: Record<number, number> } = {}) {
  const out: number[] = [], lps: number[] = [];
  const counts = new Map<number, number>();
  for (let k = 0; k < n; k++) {
    const l = await rawLogits([...prompt, ...out]);
    for (const [j, c] of counts) l[j] -= c * (o.frequency ?? 0) + (c > 0 ? (o.presence ?? 0) : 0);
    for (const [j, b] of Object.entries(o.bias ?? {})) l[Number(j)] += b;
    let best = 0;
    for (let j = 1; j < l.length; j++) if (l[j] > l[best]) best = j;
    if (local.model.tokenizer.eog.has(best)) break;
    lps.push(logSoftmax(l)[best]);
    out.push(best);
    counts.set(best, (counts.get(best) ?? 0) + 1);
  }
  return { tokens: out, text: decodeAll(local.model.tokenizer, out, prompt.at(-1)), logprobs: lps };
}

describe("logprobs", () => {
  it("chat, not streamed: each token's logprob and top_logprobs are log_softmax of the model's logits", async () => {
    const r = await client.chat.completions.create({ model: "m", messages: [{ role: "user", content: PROMPT }], max_tokens: 12, temperature: 0, logprobs: true, top_logprobs: 3 });
    const content = r.choices[0].logprobs!.content!;
    expect(content).toHaveLength(12);
    expect(content.map((c) => c.token).join("")).toBe(r.choices[0].message.content);
    expect(Buffer.from(content.flatMap((c) => c.bytes!)).toString("utf8")).toBe(r.choices[0].message.content);
    const ref = await referenceGreedy(ids(PROMPT), 12);
    expect(r.choices[0].message.content).toBe(ref.text);
    const context = ids(PROMPT);
    for (const [k, c] of content.entries()) {
      const lp = logSoftmax(await rawLogits(context));
      expect(c.logprob).toBeCloseTo(lp[ref.tokens[k]], 5);
      expect(c.top_logprobs).toHaveLength(3);
      const best = [...lp.keys()].sort((a, b) => lp[b] - lp[a]).slice(0, 3);
      c.top_logprobs.forEach((t, i) => expect(t.logprob).toBeCloseTo(lp[best[i]], 5));
      expect(c.top_logprobs[0]).toMatchObject({ token: c.token, logprob: c.logprob }); // greedy: the likeliest
      context.push(ref.tokens[k]);
    }
  });

  it("do not depend on temperature (the model's distribution), and a sampled token's logprob is finite", async () => {
    const r = await client.chat.completions.create({ model: "m", messages: [{ role: "user", content: PROMPT }], max_tokens: 8, temperature: 1.5, seed: 3, logprobs: true });
    const content = r.choices[0].logprobs!.content!;
    expect(content.every((c) => c.top_logprobs.length === 0 && Number.isFinite(c.logprob) && c.logprob <= 0)).toBe(true);
    const tok = local.model.tokenizer, last = ids(PROMPT).at(-1);
    const raw = await rawLogits(ids(PROMPT)), lp = logSoftmax(raw);
    // the token (several ids may write the same bytes: a piece and its byte tokens)
    const same = [...Array(tok.vocabSize).keys()].filter((j) => Buffer.from(tok.tokenBytes(j, last)).equals(Buffer.from(content[0].bytes!)));
    const id = same.reduce((a, j) => (Math.abs(lp[j] - content[0].logprob) < Math.abs(lp[a] - content[0].logprob) ? j : a));
    expect(content[0].logprob).toBeCloseTo(lp[id], 5);
    expect(content[0].logprob).not.toBeCloseTo(logSoftmax(raw.map((x) => x / 1.5))[id], 3); // not the tempered distribution
  });

  it("completions, streamed and not: the same tokens, logprobs, top_logprobs (with the sampled token) and text offsets", async () => {
    const body = { model: "m", prompt: PROMPT, max_tokens: 20, temperature: 0, logprobs: 2 };
    const whole = await client.completions.create(body);
    const lp = whole.choices[0].logprobs!;
    expect(lp.tokens).toHaveLength(20);
    expect(lp.tokens!.join("")).toBe(whole.choices[0].text);
    expect(lp.text_offset![0]).toBe(0);
    lp.tokens!.forEach((t, i) => expect(whole.choices[0].text.slice(lp.text_offset![i]).startsWith(t)).toBe(true));
    lp.top_logprobs!.forEach((top, i) => {
      expect(Object.keys(top).length).toBeGreaterThanOrEqual(2);
      expect(top[lp.tokens![i]]).toBe(lp.token_logprobs![i]);
    });
    const ref = await referenceGreedy(ids(PROMPT), 20);
    lp.token_logprobs!.forEach((x, i) => expect(x).toBeCloseTo(ref.logprobs[i], 5));
    const s = await client.completions.create({ ...body, stream: true });
    const got = { tokens: [] as string[], token_logprobs: [] as number[], top_logprobs: [] as unknown[], text_offset: [] as number[] };
    let text = "";
    for await (const c of s) {
      text += c.choices[0].text;
      const l = c.choices[0].logprobs;
      if (l) for (const k of ["tokens", "token_logprobs", "top_logprobs", "text_offset"] as const) (got[k] as unknown[]).push(...(l[k] as unknown[]));
    }
    expect(text).toBe(whole.choices[0].text);
    expect(got).toEqual(lp);
  });

  it("chat streamed: chunk by chunk, the same as not streamed", async () => {
    const body = { model: "m", messages: [{ role: "user" as const, content: "Lily" }], max_tokens: 15, temperature: 0, logprobs: true, top_logprobs: 2 };
    const whole = await client.chat.completions.create(body);
    const s = await client.chat.completions.create({ ...body, stream: true });
    const content = [];
    for await (const c of s) content.push(...(c.choices[0]?.logprobs?.content ?? []));
    expect(content).toEqual(whole.choices[0].logprobs!.content);
  });

  it("stop strings: no logprobs for the tokens cut off", async () => {
    const r = await client.completions.create({ model: "m", prompt: PROMPT, max_tokens: 40, temperature: 0, logprobs: 0, stop: ["Lily"] });
    const lp = r.choices[0].logprobs!;
    expect(r.choices[0].finish_reason).toBe("stop");
    expect(lp.tokens!.join("").startsWith(r.choices[0].text)).toBe(true);
    expect(lp.text_offset!.every((o) => o < r.choices[0].text.length)).toBe(true);
  });
});

describe("n > 1 and several prompts", () => {
  it("n choices in parallel, each with seed + index: equal to one request with that seed", async () => {
    const body = { model: "m", prompt: "Lily", max_tokens: 25, temperature: 1, seed: 11 };
    const r = await client.completions.create({ ...body, n: 3 });
    expect(r.choices.map((c) => c.index)).toEqual([0, 1, 2]);
    for (let i = 0; i < 3; i++) expect(r.choices[i].text).toBe((await client.completions.create({ ...body, seed: 11 + i })).choices[0].text);
    expect(new Set(r.choices.map((c) => c.text)).size).toBe(3);
    expect(r.usage!.prompt_tokens).toBe(ids("Lily").length);
    expect(r.usage!.completion_tokens).toBe(75);
  });

  it("chat, n = 2, streamed: each choice's chunks carry its index and reassemble to the non-streamed choices", async () => {
    const body = { model: "m", messages: [{ role: "user" as const, content: PROMPT }], max_tokens: 20, temperature: 0.9, seed: 4, n: 2 };
    const whole = await client.chat.completions.create(body);
    const s = await client.chat.completions.create({ ...body, stream: true, stream_options: { include_usage: true } });
    const text = ["", ""], finish: (string | null)[] = [null, null];
    let usage;
    for await (const c of s) {
      for (const ch of c.choices) {
        text[ch.index] += ch.delta.content ?? "";
        finish[ch.index] ??= ch.finish_reason;
      }
      usage = c.usage ?? usage;
    }
    expect(text).toEqual(whole.choices.map((c) => c.message.content));
    expect(finish).toEqual(whole.choices.map((c) => c.finish_reason));
    expect(usage).toEqual(whole.usage);
  });

  it("several prompts (strings or token id arrays), choices prompt-major", async () => {
    const prompts = [PROMPT, "Lily", "The cat"];
    const r = await client.completions.create({ model: "m", prompt: prompts, n: 2, max_tokens: 10, temperature: 0 });
    expect(r.choices.map((c) => c.index)).toEqual([0, 1, 2, 3, 4, 5]);
    for (const [i, p] of prompts.entries()) {
      const alone = (await client.completions.create({ model: "m", prompt: p, max_tokens: 10, temperature: 0 })).choices[0].text;
      expect(r.choices[2 * i].text, p).toBe(alone);
      expect(r.choices[2 * i + 1].text, p).toBe(alone);
    }
    expect(r.usage!.prompt_tokens).toBe(prompts.reduce((a, p) => a + ids(p).length, 0));
    const byIds = await client.completions.create({ model: "m", prompt: prompts.map(ids), n: 2, max_tokens: 10, temperature: 0 });
    expect(byIds.choices.map((c) => c.text)).toEqual(r.choices.map((c) => c.text));
    const s = await client.completions.create({ model: "m", prompt: prompts, n: 2, max_tokens: 10, temperature: 0, stream: true });
    const text = Array<string>(6).fill("");
    for await (const c of s) for (const ch of c.choices) text[ch.index] += ch.text;
    expect(text).toEqual(r.choices.map((c) => c.text));
  });
});

describe("penalties and logit_bias", () => {
  const prompt = "Lily";
  const greedy = (extra: object) => client.completions.create({ model: "m", prompt, max_tokens: 40, temperature: 0, logprobs: 0, ...extra });

  it("frequency and presence penalties: OpenAI's formula on the generated tokens' counts", async () => {
    const plain = await greedy({});
    for (const [frequency, presence] of [[1.5, 0], [0, 2], [0.7, 0.6], [-0.5, 0]]) {
      const r = await greedy({ frequency_penalty: frequency, presence_penalty: presence });
      const ref = await referenceGreedy(ids(prompt), 40, { frequency, presence });
      expect(r.choices[0].text, `${frequency} ${presence}`).toBe(ref.text);
      r.choices[0].logprobs!.token_logprobs!.forEach((x, i) => expect(x).toBeCloseTo(ref.logprobs[i], 5));
      if (frequency > 0 || presence > 0) expect(r.choices[0].text).not.toBe(plain.choices[0].text);
    }
  });

  it("logit_bias: -100 bans a token, +100 forces one; logprobs show the biased distribution", async () => {
    const first = (await referenceGreedy(ids(prompt), 1)).tokens[0];
    const banned = await greedy({ logit_bias: { [first]: -100 } });
    const refBanned = await referenceGreedy(ids(prompt), 40, { bias: { [first]: -100 } });
    expect(banned.choices[0].text).toBe(refBanned.text);
    expect(refBanned.tokens).not.toContain(first);
    const dog = ids(" dog").at(-1)!;
    const forced = await greedy({ logit_bias: { [dog]: 100 }, max_tokens: 5 });
    expect(forced.choices[0].text).toBe(decodeAll(local.model.tokenizer, [dog, dog, dog, dog, dog], ids(prompt).at(-1)));
    expect(forced.choices[0].logprobs!.token_logprobs!.every((x) => x > -1e-3)).toBe(true);
    await expect(greedy({ logit_bias: { "100000": 5 } })).rejects.toMatchObject({ status: 400, param: "logit_bias" });
  });
});

// The mean over rows of rmsnorm(h) * output_norm, normalized, in f64 from the GGUF's own weight
async function referenceEmbedding(text: string): Promise<number[]> {
  const { model, stack } = local;
  const C = model.cfg.dim, x = ids(text);
  const [h] = await stack.forward([{ session: "ref-embd", pos: 0, T: x.length, tokens: x, hidden: model.embedder.embed(x) }]);
  await stack.dropSession("ref-embd");
  const w = loadVector(readGGUF(STORIES_GGUF), "output_norm.weight", C);
  const mean = new Float64Array(C);
  for (let t = 0; t < x.length; t++) {
    const row = h.subarray(t * C, (t + 1) * C);
    const rms = Math.sqrt(row.reduce((a, v) => a + v * v, 0) / C + model.cfg.eps);
    for (let c = 0; c < C; c++) mean[c] += (row[c] / rms) * w[c] / x.length;
  }
  const norm = Math.hypot(...mean);
  return Array.from(mean, (v) => v / norm);
}

describe("embeddings", () => {
  it("mean-pooled last hidden state after the final norm, unit length; strings, arrays, token ids; float and base64", async () => {
    const r = await client.embeddings.create({ model: "m", input: PROMPT }); // the client asks for base64 and decodes it
    expect(r.data).toHaveLength(1);
    expect(r.data[0].embedding).toHaveLength(local.model.cfg.dim);
    const ref = await referenceEmbedding(PROMPT);
    r.data[0].embedding.forEach((v, i) => expect(v).toBeCloseTo(ref[i], 5));
    expect(r.usage).toEqual({ prompt_tokens: ids(PROMPT).length, total_tokens: ids(PROMPT).length });
    const many = await client.embeddings.create({ model: "m", input: [PROMPT, "Lily", "The cat sat"], encoding_format: "float" });
    expect(many.data.map((d) => d.index)).toEqual([0, 1, 2]);
    expect(many.data[0].embedding).toEqual(r.data[0].embedding);
    const lily = await referenceEmbedding("Lily");
    many.data[1].embedding.forEach((v, i) => expect(v).toBeCloseTo(lily[i], 5));
    const byIds = await client.embeddings.create({ model: "m", input: [ids(PROMPT), ids("Lily")], encoding_format: "float" });
    expect(byIds.data.map((d) => d.embedding)).toEqual(many.data.slice(0, 2).map((d) => d.embedding));
    await expect(client.embeddings.create({ model: "m", input: "" })).rejects.toMatchObject({ status: 400, param: "input" });
    await expect(client.embeddings.create({ model: "m", input: "x", dimensions: 3 })).rejects.toMatchObject({ status: 400, param: "dimensions" });
  });

  it("an input longer than one chunk (64 tokens) pools every row", async () => {
    const text = "Once upon a time, there was a little girl named Lily. She loved to play outside in the sunshine. ".repeat(3);
    expect(ids(text).length).toBeGreaterThan(64);
    const r = await client.embeddings.create({ model: "m", input: text, encoding_format: "float" });
    const ref = await referenceEmbedding(text);
    r.data[0].embedding.forEach((v, i) => expect(v).toBeCloseTo(ref[i], 5));
  });
});

describe("through a swarm (in memory, 2 nodes)", () => {
  let sw: MemSwarm;
  let swarmClient: OpenAI;
  let swarmApi: ApiServer;
  beforeAll(async () => {
    sw = await memSwarm(STORIES_GGUF, [{ start: 0, end: 2 }, { start: 2, end: 5 }]);
    swarmApi = new ApiServer(sw.model, sw.gw, { modelId: "m" });
    swarmClient = new OpenAI({ baseURL: `http://127.0.0.1:${await swarmApi.listen(0)}/v1`, apiKey: "none", maxRetries: 0 });
  });
  afterAll(async () => {
    await swarmApi?.close();
    await sw?.stop();
  });

  it("n > 1 with logprobs, penalties and bias, several prompts, and embeddings: the local answers exactly", async () => {
    const body = { model: "m", prompt: [PROMPT, "Lily"], n: 3, max_tokens: 20, temperature: 0.8, seed: 9, logprobs: 2, frequency_penalty: 0.5, presence_penalty: 0.3, logit_bias: { "400": -3 } };
    const [a, b] = await Promise.all([swarmClient.completions.create(body), client.completions.create(body)]);
    expect(a.choices).toHaveLength(6);
    expect(a.choices).toEqual(b.choices);
    const ea = await swarmClient.embeddings.create({ model: "m", input: [PROMPT, "Lily"], encoding_format: "float" });
    const eb = await client.embeddings.create({ model: "m", input: [PROMPT, "Lily"], encoding_format: "float" });
    expect(ea.data).toEqual(eb.data);
  });
});
