// Per-session KV cache for the layers a runtime holds. Memory grows with the
// session (doubling, up to the context length) and is charged against a budget
// shared by all sessions of the runtime.

import { LayerswarmError } from "../errors.js";

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

  // Make room for positions [0, n).
  reserve(n: number): void {
    if (n > this.maxContext)
      throw new LayerswarmError("CONTEXT_OVERFLOW", `session ${this.id}: ${n} positions exceed the context length ${this.maxContext}`);
    if (n <= this.capacity) return;
    // a multiple of 16: K is stored in blocks of 16 positions (kernels/ref/ops.ts kIndex)
    const cap = Math.ceil(Math.min(this.maxContext, Math.max(n, this.capacity * 2, 16)) / 16) * 16;
    const extra = (cap - this.capacity) * this.kvDim * 4 * 2 * this.nLayers;
    this.budget.charge(extra, `session ${this.id} growing to ${cap} positions`);
    for (let l = 0; l < this.nLayers; l++) {
      const k = new Float32Array(cap * this.kvDim), v = new Float32Array(cap * this.kvDim);
      k.set(this.k[l].subarray(0, Math.ceil(this.length / 16) * 16 * this.kvDim));
      v.set(this.v[l].subarray(0, this.length * this.kvDim));
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
