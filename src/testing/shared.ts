// Paths to ../shared (read in place, never copied) and small helpers for tests.

import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
export const REPO = path.resolve(here, "../..").replace(/\/dist$/, "");
export const SHARED = process.env.LAYERSWARM_SHARED ?? path.resolve(REPO, "../shared");
export const STORIES_GGUF = path.join(SHARED, "models/stories260K.gguf");
export const STORIES_BIN = path.join(SHARED, "models/stories260K.bin");
export const TOK512 = path.join(SHARED, "models/tok512.bin");

export function goldenIds(name: string): number[] {
  return fs.readFileSync(path.join(SHARED, "golden", `${name}.ids`), "utf8").trim().split(/\s+/).map(Number);
}
export function goldenText(name: string): string {
  return fs.readFileSync(path.join(SHARED, "golden", `${name}.txt`), "utf8");
}
// logits.txt: "pos P in_token T argmax A logits[0:8]: v0 ... v7"
export function goldenLogits(): { pos: number; argmax: number; logits: number[] }[] {
  return fs
    .readFileSync(path.join(SHARED, "golden/logits.txt"), "utf8")
    .split("\n")
    .filter((l) => l.startsWith("pos "))
    .map((l) => {
      const m = /^pos (\d+) in_token \d+ argmax (\d+) logits\[0:8\]: (.*)$/.exec(l)!;
      return { pos: Number(m[1]), argmax: Number(m[2]), logits: m[3].trim().split(/\s+/).map(Number) };
    });
}

export function tmpDir(prefix = "layerswarm-test-"): string {
  return fs.mkdtempSync(path.join(process.env.TMPDIR ?? "/tmp", prefix));
}

// Identical bits, reporting the first difference.
export function firstDiff(a: Float32Array, b: Float32Array): string | undefined {
  if (a.length !== b.length) return `lengths ${a.length} vs ${b.length}`;
  const ua = new Uint32Array(a.buffer, a.byteOffset, a.length), ub = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < ua.length; i++) if (ua[i] !== ub[i]) return `index ${i}: ${a[i]} vs ${b[i]}`;
  return undefined;
}
