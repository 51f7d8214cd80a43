// Child of core.ts: load layers [start, end) of a model (nothing else) and
// print the process's resident memory as JSON. Without arguments: an empty process.

import { readGGUF } from "../src/format/gguf.js";
import { configFromGGUF } from "../src/model/config.js";
import { loadSlice } from "../src/model/model.js";
import { createKernels } from "../src/kernels/index.js";

const [file, start, end] = process.argv.slice(2);
let held: unknown;
if (file) {
  const f = readGGUF(file);
  held = loadSlice(f, configFromGGUF(f), { start: Number(start), end: Number(end) }, createKernels({ threads: 1 }));
}
(globalThis as { gc?: () => void }).gc?.();
console.log(JSON.stringify({ rss: process.memoryUsage().rss, held: !!held }));
