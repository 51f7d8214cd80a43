// Model manifests (src/format/manifest.ts): the time to compute one by
// streaming the file, beside one SHA-256 of the whole file read into memory in
// the same run (the baseline: what hashing costs at all); the cached lookup; and
// what hashing every tensor a node loads adds to loading its layers.
//
//   npx tsc -p tsconfig.json && node dist/bench/manifest.js [--file FILE]...
//   (default: stories260K and a ~250 MB synthetic F32 model)

import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { parseArgs } from "node:util";
import { readGGUF } from "../src/format/gguf.js";
import { ReadHashes, computeManifest, manifestCachePaths, modelManifest } from "../src/format/manifest.js";
import { synthesize } from "../src/format/synth.js";
import { createKernels } from "../src/kernels/index.js";
import { configFromGGUF } from "../src/model/config.js";
import { loadSlice } from "../src/model/model.js";
import { STORIES_GGUF } from "../src/testing/shared.js";

const { values } = parseArgs({ options: { file: { type: "string", multiple: true } } });
const files = values.file ?? [
  STORIES_GGUF,
  synthesize({ arch: "llama", dim: 1024, layers: 4, heads: 16, kvHeads: 4, ffn: 2816, vocab: 8000, context: 512, type: "F32", tied: false, seed: 9 }),
];

async function best(n: number, f: () => unknown): Promise<number> {
  let b = Infinity;
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    await f();
    b = Math.min(b, performance.now() - t);
  }
  return b;
}

const kernels = createKernels();
for (const p of files) {
  const mb = fs.statSync(p).size / 1e6;
  fs.readFileSync(p); // the page cache warm for both
  const ours = await best(3, () => computeManifest(p));
  const whole = await best(3, () => createHash("sha256").update(fs.readFileSync(p)).digest("hex"));
  await modelManifest(p); // cached now
  const cached = await best(5, () => modelManifest(p));
  const { cachePath } = await modelManifest(p);
  const f0 = readGGUF(p), L = configFromGGUF(f0).nLayers;
  const load = (hash: boolean) => best(3, () => {
    const f = readGGUF(p);
    const reads = hash ? new ReadHashes(f) : undefined;
    loadSlice(f, configFromGGUF(f), { start: 0, end: L }, kernels);
    for (let i = 0; i < L && reads; i++) reads.layer(i);
  });
  const plain = await load(false), hashed = await load(true);
  console.log(`${path.basename(p)} (${mb.toFixed(1)} MB): manifest ${ours.toFixed(1)} ms (${(mb / ours * 1000).toFixed(0)} MB/s), ` +
    `baseline one SHA-256 of the whole file in memory ${whole.toFixed(1)} ms, ratio ${(ours / whole).toFixed(2)}; ` +
    `cached lookup ${cached.toFixed(2)} ms (${cachePath === manifestCachePaths(p).beside ? "beside the file" : "cache directory"}); ` +
    `loading all ${L} layers ${plain.toFixed(0)} ms, hashing what is loaded ${hashed.toFixed(0)} ms, ratio ${(hashed / plain).toFixed(2)}`);
}
