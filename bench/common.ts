// Shared helpers for benchmarks: synthetic models, token streams, table printing.

import { SHAPES, SynthSpec, synthesize } from "../src/format/synth.js";

export function benchModel(type: string, shape = "llama-1b"): string {
  const spec: SynthSpec = { ...SHAPES[shape], type, seed: 1 };
  process.stderr.write(`model: ${shape} ${type} (generating into the cache on first use)...\n`);
  return synthesize(spec);
}

// Deterministic prompt token ids inside the vocabulary, avoiding special tokens.
export function promptTokens(n: number, vocab: number, bos = 1): number[] {
  return [bos, ...Array.from({ length: n - 1 }, (_, i) => 300 + ((i * 7919) % (vocab - 400)))];
}

export function row(cells: (string | number)[], widths: number[]): string {
  return cells.map((c, i) => String(c).padEnd(widths[i])).join("  ");
}

export function ratio(a: number, b: number): string {
  return b > 0 ? (a / b).toFixed(2) : "-";
}

export function args(): Map<string, string> {
  const m = new Map<string, string>();
  const a = process.argv.slice(2);
  for (let i = 0; i < a.length; i++) if (a[i].startsWith("--")) m.set(a[i].slice(2), a[i + 1] && !a[i + 1].startsWith("--") ? a[++i] : "true");
  return m;
}
