// Sampling on the gateway: greedy, temperature, top-k, top-p, min-p and
// repetition penalty, from a seeded generator so a seed reproduces a run.

export interface SamplingParams {
  temperature?: number; // 0 = greedy (default 0)
  topK?: number; // 0 = off
  topP?: number; // 1 = off
  minP?: number; // 0 = off
  repetitionPenalty?: number; // 1 = off
  repetitionWindow?: number; // last N tokens considered (default 64)
  seed?: number;
}

// xorshift64* : small, fast, and identical on every platform.
export class Rng {
  private s: bigint;
  constructor(seed: number) {
    this.s = BigInt.asUintN(64, BigInt(Math.floor(seed)) * 0x9e3779b97f4a7c15n + 0x2545f4914f6cdd1dn) || 1n;
  }
  // uniform in [0, 1)
  next(): number {
    let x = this.s;
    x ^= x >> 12n;
    x ^= BigInt.asUintN(64, x << 25n);
    x ^= x >> 27n;
    this.s = x;
    const r = BigInt.asUintN(64, x * 0x2545f4914f6cdd1dn);
    return Number(r >> 11n) / 2 ** 53;
  }
}

export function argmax(logits: Float32Array, off = 0, n = logits.length - off): number {
  let best = 0, bv = -Infinity;
  for (let i = 0; i < n; i++) if (logits[off + i] > bv) (bv = logits[off + i]), (best = i);
  return best;
}

export class Sampler {
  private rng: Rng;
  constructor(readonly p: SamplingParams = {}) {
    this.rng = new Rng(p.seed ?? Date.now());
  }

  // logits (V,) -> token id; `history` is the tokens so far (for the penalty)
  sample(logits: Float32Array, history: readonly number[] = []): number {
    const p = this.p;
    const l = Float32Array.from(logits);
    const pen = p.repetitionPenalty ?? 1;
    if (pen !== 1) {
      const seen = new Set(history.slice(-(p.repetitionWindow ?? 64)));
      for (const t of seen) if (t >= 0 && t < l.length) l[t] = l[t] > 0 ? l[t] / pen : l[t] * pen;
    }
    const temp = p.temperature ?? 0;
    if (temp <= 0) return argmax(l);
    // candidates sorted by logit, descending (ties: lower id first)
    let idx = Array.from(l.keys()).sort((a, b) => l[b] - l[a] || a - b);
    if (p.topK && p.topK > 0) idx = idx.slice(0, p.topK);
    const max = l[idx[0]];
    let probs = idx.map((i) => Math.exp((l[i] - max) / temp));
    let sum = probs.reduce((a, b) => a + b, 0);
    probs = probs.map((x) => x / sum);
    if (p.minP && p.minP > 0) {
      const cut = probs[0] * p.minP;
      const keep = probs.findIndex((x) => x < cut);
      if (keep > 0) (idx = idx.slice(0, keep)), (probs = probs.slice(0, keep));
    }
    if (p.topP !== undefined && p.topP < 1) {
      let c = 0, n = 0;
      while (n < probs.length && c < p.topP) c += probs[n++];
      idx = idx.slice(0, Math.max(1, n));
      probs = probs.slice(0, Math.max(1, n));
    }
    sum = probs.reduce((a, b) => a + b, 0);
    let u = this.rng.next() * sum;
    for (let i = 0; i < idx.length; i++) {
      u -= probs[i];
      if (u < 0) return idx[i];
    }
    return idx[idx.length - 1];
  }
}
