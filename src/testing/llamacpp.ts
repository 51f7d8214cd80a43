// llama.cpp (node-llama-cpp) as an oracle: its greedy tokens and next-token
// distribution for a file, shared by the tests that compare against it.

import type { Llama } from "node-llama-cpp";

export async function theirGreedy(llama: Llama, path: string, prompt: number[], n: number): Promise<number[]> {
  const lm = await llama.loadModel({ modelPath: path });
  const ctx = await lm.createContext({ threads: 1, contextSize: 256 });
  const out: number[] = [];
  for await (const o of ctx.getSequence().evaluateWithMetadata(prompt as never, {}, { temperature: 0 })) {
    out.push(o.token as number);
    if (out.length >= n) break;
  }
  await ctx.dispose();
  await lm.dispose();
  return out;
}

export async function theirNext(llama: Llama, path: string, prompt: number[]): Promise<Map<number, number>> {
  const lm = await llama.loadModel({ modelPath: path });
  const ctx = await lm.createContext({ threads: 1, contextSize: 256 });
  let probs: Map<number, number> | undefined;
  for await (const o of ctx.getSequence().evaluateWithMetadata(prompt as never, { probabilities: true }, { temperature: 0 })) {
    probs = o.probabilities as Map<number, number>;
    break;
  }
  await ctx.dispose();
  await lm.dispose();
  return probs!;
}

export function softmax(l: Float32Array): number[] {
  const m = Math.max(...l), e = Array.from(l, (x) => Math.exp(x - m)), s = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / s);
}
