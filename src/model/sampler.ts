// Sampling on the gateway: logit bias, repetition / frequency / presence
// penalties, then greedy, temperature, top-k, top-p and min-p. The random
// number behind the token at position p is uniform(seed, p), a pure function
// (counter-based, not one sequential stream), turned into a token by inverse
// CDF over the processed distribution: the token at a position depends only on
// its logits, the seed and the position, not on how many tokens were drawn
// before. That is what lets speculative decoding verify drafted tokens by
// equality at any temperature (model.ts generate) and still give exactly the
// tokens plain decoding gives. `logprobs()` reports the distribution the choice
// was made from (after bias and penalties, before temperature and truncation),
// as the OpenAI API does.

export interface SamplingParams {
  temperature?: number; // 0 = greedy (default 0)
  topK?: number; // 0 = off
  topP?: number; // 1 = off
  minP?: number; // 0 = off
  repetitionPenalty?: number; // 1 = off (llama.cpp's: divides a seen token's positive logit, multiplies a negative one)
  repetitionWindow?: number; // last N tokens considered (default 64)
  frequencyPenalty?: number; // OpenAI's: minus c[j] * penalty, c[j] = times token j was sampled so far (0 = off)
  presencePenalty?: number; // OpenAI's: minus penalty once token j was sampled at all (0 = off)
  logitBias?: ReadonlyMap<number, number>; // token id -> added to its logit (OpenAI's logit_bias)
  seed?: number;
}

const M64 = (1n << 64n) - 1n;

// SplitMix64's finalizer: a bijection of 64-bit integers that mixes every bit.
function mix64(x: bigint): bigint {
  let z = (x + 0x9e3779b97f4a7c15n) & M64;
  z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & M64;
  z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & M64;
  return z ^ (z >> 31n);
}

// (seed, position) -> uniform in [0, 1) with 53 random bits: the randomness of
// the token at `pos` (mix64(mix64(seed) xor pos), SplitMix64 used as a
// counter-based generator). Identical on every platform.
export function uniform(seed: number, pos: number): number {
  const r = mix64(mix64(BigInt.asUintN(64, BigInt(Math.floor(seed)))) ^ BigInt.asUintN(64, BigInt(pos)));
  return Number(r >> 11n) / 2 ** 53;
}

// xorshift64* : small, fast, and identical on every platform (a sequential
// stream, for tests that need many random numbers; sampling uses uniform()).
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

export interface TokenLogprob {
  id: number;
  logprob: number; // natural log
}

// log_softmax(logits) (V,) at `id`, and the `k` most likely tokens, most likely
// first (ties: lower id first; tokens at -Infinity never: fewer than `k` when
// fewer can be drawn). Sums in f64.
export function logprobs(logits: Float32Array, id: number, k: number): { logprob: number; top: TokenLogprob[] } {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i] > max) max = logits[i];
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i] - max);
  const logZ = max + Math.log(sum);
  // the k best by insertion into a short sorted list: O(V) for small k
  const best: number[] = [];
  for (let i = 0; i < logits.length && k > 0; i++) {
    if (logits[i] === -Infinity) continue; // a token that cannot be drawn (masked) is no alternative
    if (best.length === k && logits[i] <= logits[best[k - 1]]) continue;
    let j = best.length < k ? best.length : k - 1;
    while (j > 0 && logits[best[j - 1]] < logits[i]) j--;
    best.splice(j, 0, i);
    if (best.length > k) best.pop();
  }
  return { logprob: logits[id] - logZ, top: best.map((t) => ({ id: t, logprob: logits[t] - logZ })) };
}

// One sampler per generated sequence. Its only state is the counts of the
// tokens it picked (frequency and presence penalties), so a caller that
// samples positions in order, as plain decoding does, gets the same tokens
// whether or not they were computed in one step with others (speculation).
export class Sampler {
  readonly seed: number;
  private counts = new Map<number, number>(); // token -> times this sampler picked it (OpenAI's c[j])
  constructor(readonly p: SamplingParams = {}) {
    this.seed = Math.floor(p.seed ?? Date.now());
  }

  // logits (V,) -> token id; `history` is the tokens so far (for the repetition
  // penalty); the token is at position `pos` (default: history.length)
  sample(logits: Float32Array, history: readonly number[] = [], pos = history.length): number {
    return this.step(logits, history, pos).id;
  }

  // The token at position `pos`, and the logits it was drawn from (after bias and penalties).
  step(logits: Float32Array, history: readonly number[] = [], pos = history.length): { id: number; logits: Float32Array } {
    const l = this.adjust(logits, history);
    const id = this.pick(l, pos);
    this.counts.set(id, (this.counts.get(id) ?? 0) + 1);
    return { id, logits: l };
  }

  // logits (V,) -> a copy with logit bias, repetition, frequency and presence penalties applied
  adjust(logits: Float32Array, history: readonly number[]): Float32Array {
    const p = this.p;
    const l = Float32Array.from(logits);
    if (p.logitBias) for (const [t, b] of p.logitBias) if (t >= 0 && t < l.length) l[t] += b;
    const pen = p.repetitionPenalty ?? 1;
    if (pen !== 1) {
      const seen = new Set(history.slice(-(p.repetitionWindow ?? 64)));
      for (const t of seen) if (t >= 0 && t < l.length) l[t] = l[t] > 0 ? l[t] / pen : l[t] * pen;
    }
    const freq = p.frequencyPenalty ?? 0, pres = p.presencePenalty ?? 0;
    if (freq !== 0 || pres !== 0) for (const [t, c] of this.counts) l[t] -= c * freq + pres;
    return l;
  }

  // adjusted logits (V,) -> token id at `pos`: greedy, or temperature with
  // top-k, min-p and top-p, then inverse CDF at uniform(seed, pos)
  private pick(l: Float32Array, pos: number): number {
    const p = this.p;
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
    let u = uniform(this.seed, pos) * sum;
    for (let i = 0; i < idx.length; i++) {
      u -= probs[i];
      if (u < 0) return idx[i];
    }
    return idx[idx.length - 1];
  }
}
