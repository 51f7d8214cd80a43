// Per-session KV cache for the layers a runtime holds. Memory grows with the
// session (powers of two, up to the context length) and is charged against a
// budget shared by all sessions of the runtime. The capacity is a function of
// the positions held (capacityFor), so a cache truncated to n positions
// (speculation's rollback) holds and is charged exactly what a cache that was
// only ever sent n positions would.

import { LayerswarmError } from "../errors.js";
import { kIndex } from "../kernels/ref/ops.js";

export class KVBudget {
  usedBytes = 0;
  constructor(readonly maxBytes: number) {}
  charge(bytes: number, what: string): void {
    if (this.usedBytes + bytes > this.maxBytes)
      throw new LayerswarmError("OUT_OF_MEMORY",
        `KV cache memory exhausted: ${what} needs ${bytes} more bytes, ${this.usedBytes} of ${this.maxBytes} in use (raise --max-memory or end other sessions)`);
    this.usedBytes += bytes;
  }
  release(bytes: number): void {
    this.usedBytes -= bytes;
  }
}

export class KVCache {
  length = 0; // positions filled
  capacity = 0;
  k: Float32Array[]; // per layer: (capacity / 16, kvDim, 16), see kIndex

  v: Float32Array[];
  constructor(readonly id: string, readonly nLayers: number, readonly kvDim: number, readonly maxContext: number, private budget: KVBudget) {
    this.k = Array.from({ length: nLayers }, () => new Float32Array(0));
    this.v = Array.from({ length: nLayers }, () => new Float32Array(0));
  }

  get bytes(): number {
    return this.capacity * this.kvDim * 4 * 2 * this.nLayers;
  }

  // Positions held for a session of n positions: 0 for none, else the next
  // power of two (at least 16), at most the context length, in whole blocks of
  // 16 (K is stored in blocks of 16 positions: kernels/ref/ops.ts kIndex).
  capacityFor(n: number): number {
    if (n <= 0) return 0;
    return Math.ceil(Math.min(this.maxContext, Math.max(16, 2 ** Math.ceil(Math.log2(n)))) / 16) * 16;
  }

  // Make room for positions [0, n).
  reserve(n: number): void {
    if (n > this.maxContext)
      throw new LayerswarmError("CONTEXT_OVERFLOW", `session ${this.id}: ${n} positions exceed the context length ${this.maxContext}`);
    if (n <= this.capacity) return;
    const cap = this.capacityFor(n);
    this.budget.charge((cap - this.capacity) * this.kvDim * 4 * 2 * this.nLayers, `session ${this.id} growing to ${cap} positions`);
    this.resize(cap);
  }

  // Forget positions [n, length): the cache, and the memory charged for it, are
  // as if only positions [0, n) had ever been sent (the values at positions >=
  // n are zeroed, as a fresh cache's are).
  truncate(n: number): void {
    if (!Number.isInteger(n) || n < 0) throw new LayerswarmError("BAD_ARGUMENT", `session ${this.id}: cannot truncate to position ${n}`);
    if (n >= this.length) return;
    this.length = n;
    const cap = this.capacityFor(n);
    if (cap < this.capacity) {
      this.budget.release((this.capacity - cap) * this.kvDim * 4 * 2 * this.nLayers);
      this.resize(cap);
    } else {
      for (let l = 0; l < this.nLayers; l++) {
        // K's block of 16 holding position n keeps positions below n (kIndex layout)
        const kb = Math.floor(n / 16) * 16;
        for (let p = n; p < Math.min(kb + 16, cap); p++) for (let e = 0; e < this.kvDim; e++) this.k[l][kIndex(p, e, this.kvDim)] = 0;
        this.k[l].fill(0, Math.min(kb + 16, cap) * this.kvDim);
        this.v[l].fill(0, n * this.kvDim);
      }
    }
  }

  // New arrays of `cap` positions holding the first `length` positions (the rest zero).
  private resize(cap: number): void {
    const n = Math.min(this.length, cap);
    for (let l = 0; l < this.nLayers; l++) {
      const k = new Float32Array(cap * this.kvDim), v = new Float32Array(cap * this.kvDim);
      const kb = Math.ceil(n / 16) * 16; // whole blocks of K
      k.set(this.k[l].subarray(0, kb * this.kvDim));
      if (n < kb) for (let p = n; p < kb; p++) for (let e = 0; e < this.kvDim; e++) k[kIndex(p, e, this.kvDim)] = 0;
      v.set(this.v[l].subarray(0, n * this.kvDim));
      this.k[l] = k;
      this.v[l] = v;
    }
    this.capacity = cap;
  }

  free(): void {
    this.budget.release(this.bytes);
    this.capacity = 0;
    this.length = 0;
    this.k = this.k.map(() => new Float32Array(0));
    this.v = this.v.map(() => new Float32Array(0));
  }
}
