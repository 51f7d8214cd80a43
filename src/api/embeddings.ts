// POST /v1/embeddings, as llama-server computes them with mean pooling: the
// model's last hidden state (after the final norm, the Head's on the gateway)
// averaged over the input's tokens and scaled to unit length. The input runs
// through the same stack as a prompt (its own session, dropped after), so it
// works over the swarm unchanged.

import { randomBytes } from "node:crypto";
import { LayerStack, Model } from "../model/model.js";

const CHUNK = 64; // rows per step, as generate()'s prefill

// token ids (T,) -> embedding (C,), L2-normalized
export async function embedding(model: Model, stack: LayerStack, ids: number[], signal?: AbortSignal): Promise<Float32Array> {
  const C = model.cfg.dim;
  const session = `embd-${randomBytes(8).toString("hex")}`;
  const starts: number[] = [];
  for (let p = 0; p < ids.length; p += CHUNK) starts.push(p);
  try {
    // all chunks at once: a pipelined stack works on chunk k+1 while chunk k is further on
    const outs = await Promise.all(starts.map((p) => {
      const toks = ids.slice(p, p + CHUNK);
      return stack.forward([{ session, pos: p, T: toks.length, tokens: toks, hidden: model.embedder.embed(toks) }], signal);
    }));
    const sum = new Float64Array(C); // (C,)
    outs.forEach(([h], i) => {
      const T = Math.min(CHUNK, ids.length - starts[i]);
      const x = model.head.norm(h, T); // (T, C)
      for (let t = 0; t < T; t++) for (let c = 0; c < C; c++) sum[c] += x[t * C + c];
    });
    let norm = 0;
    for (let c = 0; c < C; c++) norm += (sum[c] / ids.length) ** 2;
    norm = Math.sqrt(norm) || 1;
    return Float32Array.from(sum, (v) => v / ids.length / norm);
  } finally {
    await stack.dropSession(session);
  }
}

// OpenAI's encoding_format "base64": the float32 values' little-endian bytes
export function base64(e: Float32Array): string {
  const b = Buffer.alloc(e.length * 4);
  e.forEach((v, i) => b.writeFloatLE(v, i * 4));
  return b.toString("base64");
}
