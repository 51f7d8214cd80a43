// Token buckets by key (a peer id, an address): each key may do something
// `burst` times at once, and the allowance refills at `perSec`. Keys left
// alone longest are forgotten beyond `maxKeys` (a forgotten key starts full,
// so a flood of new identities cannot push an honest key out to its cost).

export class RateLimiter {
  private buckets = new Map<string, { tokens: number; at: number }>();
  constructor(readonly burst: number, readonly perSec: number, private maxKeys = 10_000) {}

  // Whether `key` may go ahead now (and if so, it has one fewer).
  take(key: string, now = performance.now()): boolean {
    const b = this.buckets.get(key);
    const tokens = Math.min(this.burst, b ? b.tokens + ((now - b.at) / 1000) * this.perSec : this.burst);
    this.buckets.delete(key); // re-inserted last: the map is in order of use
    if (this.buckets.size >= this.maxKeys) this.buckets.delete(this.buckets.keys().next().value!);
    const ok = tokens >= 1;
    this.buckets.set(key, { tokens: ok ? tokens - 1 : tokens, at: now });
    return ok;
  }
}
