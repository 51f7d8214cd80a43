// Faulty on purpose: a node started with LAYERSWARM_TEST_FAULT=<kind> in its
// environment misbehaves the way a cheating node would, so tests (and anyone
// evaluating the project) can watch audits and strict mode catch it. Never set
// it on a node that serves anyone's real work; the node says loudly that it is faulty.
//
//   noise            add noise to every output row
//   noise-after:N    honest for N steps, then noise
//   noise-rate:Q     noise on a fraction Q of steps (a fixed pseudo-random sequence)
//   skip-layer       leave the last of its layers out
//   cheap-model:FILE compute with another file's weights of the same shape
//   bad-receipt      correct rows, wrong hashes in its receipts

import { createHash } from "node:crypto";
import { LayerswarmError } from "../../errors.js";

export type FaultKind =
  | { kind: "noise" }
  | { kind: "noise-after"; steps: number }
  | { kind: "noise-rate"; rate: number }
  | { kind: "skip-layer" }
  | { kind: "cheap-model"; file: string }
  | { kind: "bad-receipt" };

export const FAULT_ENV = "LAYERSWARM_TEST_FAULT";

export function parseFault(s: string | undefined): FaultKind | undefined {
  if (s === undefined || s === "") return undefined;
  const [kind, arg] = s.split(/:(.*)/s, 2);
  const bad = (m: string): never => {
    throw new LayerswarmError("BAD_ARGUMENT", `${FAULT_ENV}="${s.slice(0, 80)}": ${m} (noise, noise-after:N, noise-rate:Q, skip-layer, cheap-model:FILE, bad-receipt)`);
  };
  switch (kind) {
    case "noise":
    case "skip-layer":
    case "bad-receipt":
      if (arg !== undefined) bad(`${kind} takes no argument`);
      return { kind };
    case "noise-after": {
      const n = Number(arg);
      if (!Number.isInteger(n) || n < 0) bad("noise-after needs a whole number of steps");
      return { kind, steps: n };
    }
    case "noise-rate": {
      const q = Number(arg);
      if (!(q > 0 && q <= 1)) bad("noise-rate needs a fraction in (0, 1]");
      return { kind, rate: q };
    }
    case "cheap-model":
      if (!arg) bad("cheap-model needs a file");
      return { kind, file: arg! };
    default:
      return bad(`unknown kind "${kind}"`);
  }
}

// Decides, step by step, whether this step's outputs are corrupted (the
// noise kinds), and corrupts them. Deterministic: the same sequence of steps
// is corrupted the same way on every run, so a test can say after how many
// steps a defence caught it.
export class FaultInjector {
  private steps = 0;
  private rng = 0x9e3779b9;
  constructor(readonly fault: FaultKind) {}

  static fromEnv(env: NodeJS.ProcessEnv = process.env): FaultInjector | undefined {
    const f = parseFault(env[FAULT_ENV]);
    return f && new FaultInjector(f);
  }

  describe(): string {
    const f = this.fault;
    return f.kind === "noise-after" ? `noise-after:${f.steps}` : f.kind === "noise-rate" ? `noise-rate:${f.rate}` : f.kind === "cheap-model" ? `cheap-model:${f.file}` : f.kind;
  }

  // The layers to compute instead of [start, end): skip-layer leaves the last out (none left: all of them).
  layers(start: number, end: number): { start: number; end: number } {
    return this.fault.kind === "skip-layer" && end - start > 1 ? { start, end: end - 1 } : { start, end };
  }

  // Called once per step with its output rows (changed in place); true when it corrupted them.
  afterStep(out: Float32Array): boolean {
    const n = this.steps++, f = this.fault;
    const corrupt = f.kind === "noise" || (f.kind === "noise-after" && n >= f.steps) || (f.kind === "noise-rate" && this.next() < f.rate);
    if (!corrupt) return false;
    // noise as large as the values themselves on average: it changes answers, as a cheat's would
    let mean = 0;
    for (let i = 0; i < out.length; i++) mean += Math.abs(out[i]);
    const amp = mean / Math.max(1, out.length) || 1;
    for (let i = 0; i < out.length; i++) out[i] += (this.next() - 0.5) * 2 * amp;
    return true;
  }

  // The output hash it signs for a row: bad-receipt signs the SHA-256 of
  // something else (cut to the hash's length) while it sends the right row;
  // every other kind signs the true hash of what it sends.
  receiptHash(h: Uint8Array): Uint8Array {
    if (this.fault.kind !== "bad-receipt") return h;
    return new Uint8Array(createHash("sha256").update("layerswarm/bad-receipt\n").update(h).digest().subarray(0, h.length));
  }

  // xorshift32 in [0, 1)
  private next(): number {
    let x = this.rng;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.rng = x >>> 0;
    return this.rng / 2 ** 32;
  }
}
