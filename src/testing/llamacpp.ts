// llama.cpp (node-llama-cpp) as an oracle, and ours beside it: greedy tokens and
// next-token distributions for a file, shared by the tests that compare the two.

import type { Llama } from "node-llama-cpp";
import { Model, generate } from "../model/model.js";

export interface TheirRun {
  prompt: number[]; // as given, or llama.cpp's own tokens for a text (with BOS)
  tokens: number[];
  probs: Map<number, number>[]; // per generated token, when asked for
}

// llama.cpp's first n greedy tokens after a prompt (token ids, or a text it tokenizes itself)
export async function theirRun(llama: Llama, path: string, prompt: number[] | string, n: number, probabilities = false): Promise<TheirRun> {
  const lm = await llama.loadModel({ modelPath: path });
  const ctx = await lm.createContext({ threads: 1, contextSize: 256 });
  const ids = typeof prompt === "string" ? [1, ...(lm.tokenize(prompt, false) as number[])] : prompt;
  const run: TheirRun = { prompt: ids, tokens: [], probs: [] };
  try {
    for await (const o of ctx.getSequence().evaluateWithMetadata(ids as never, { probabilities }, { temperature: 0 })) {
      run.tokens.push(o.token as number);
      if (probabilities) run.probs.push((o as unknown as { probabilities: Map<number, number> }).probabilities);
      if (run.tokens.length >= n) break;
    }
  } finally {
    await ctx.dispose();
    await lm.dispose();
  }
  return run;
}

export async function theirGreedy(llama: Llama, path: string, prompt: number[], n: number): Promise<number[]> {
  return (await theirRun(llama, path, prompt, n)).tokens;
}

// llama.cpp's distribution of the token after the prompt
export async function theirNext(llama: Llama, path: string, prompt: number[]): Promise<Map<number, number>> {
  return (await theirRun(llama, path, prompt, 1, true)).probs[0];
}

// ours, the same two questions
export async function ourGreedy(path: string, prompt: number[], n: number): Promise<number[]> {
  const { model, stack } = Model.local(path, {});
  const out: number[] = [];
  for await (const t of generate(model, stack, prompt, { maxTokens: n, stopAtEog: false })) out.push(t.id);
  return out;
}

export async function ourNext(path: string, prompt: number[]): Promise<number[]> {
  const { model, stack } = Model.local(path, {});
  const [h] = await stack.forward([{ session: "s", pos: 0, T: prompt.length, hidden: model.embedder.embed(prompt) }]);
  return softmax(model.head.logits(h.subarray((prompt.length - 1) * model.cfg.dim), 1));
}

export function softmax(l: Float32Array): number[] {
  const m = Math.max(...l), e = Array.from(l, (x) => Math.exp(x - m)), s = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / s);
}

// max |p_theirs - p_ours| over the vocabulary
export function maxProbDiff(theirs: Map<number, number>, ours: number[]): number {
  let worst = 0;
  for (let tok = 0; tok < ours.length; tok++) worst = Math.max(worst, Math.abs((theirs.get(tok) ?? 0) - ours[tok]));
  return worst;
}
