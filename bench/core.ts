// npm run bench: the inference core against llama.cpp (node-llama-cpp 3.21.1)
// on the same synthetic Llama-3.2-1B-shaped GGUF files, same thread counts, in
// the same run. Prints decode tok/s (every weight type x 1 and 2 threads), prefill
// tok/s for a 512-token prompt (the first --prefill types), and the resident
// memory of a process holding half of the layers.
//
//   npm run bench [-- --types Q8_0,Q4_0,F16] [--threads 1,2] [--tokens 32] [--prompt 512] [--prefill 3]

import { spawnSync } from "node:child_process";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { getLlama, type Token } from "node-llama-cpp";
import { Model, generate } from "../src/model/model.js";
import { readGGUF } from "../src/format/gguf.js";
import { layerBytes } from "../src/model/weights.js";
import { args, benchModel, promptTokens, ratio, row } from "./common.js";

const a = args();
// every weight type we compute with, and a preset mix
const ALL = "Q8_0,Q4_0,F16,Q6_K,Q5_K,Q4_K,Q3_K,Q2_K,Q5_0,Q5_1,Q4_1,IQ4_NL,IQ4_XS,Q4_K_M";
const types = (a.get("types") ?? ALL).split(",");
const nPrefill = Number(a.get("prefill") ?? 3);
const threadList = (a.get("threads") ?? "1,2").split(",").map(Number);
const nDecode = Number(a.get("tokens") ?? 32);
const nPrompt = Number(a.get("prompt") ?? 512);

async function oursDecode(file: string, threads: number) {
  const { model, stack } = Model.local(file, { threads });
  const prompt = promptTokens(16, model.cfg.vocabSize);
  let t1 = 0, n = 0;
  for await (const _ of generate(model, stack, prompt, { maxTokens: nDecode + 1, stopAtEog: false, speculate: "off" })) {
    void _;
    if (n++ === 0) t1 = performance.now();
  }
  return ((n - 1) * 1000) / (performance.now() - t1);
}

async function oursPrefill(file: string, threads: number) {
  const { model, stack } = Model.local(file, { threads });
  const prompt = promptTokens(nPrompt, model.cfg.vocabSize);
  const t0 = performance.now();
  for await (const _ of generate(model, stack, prompt, { maxTokens: 1, chunkSize: 64 })) void _;
  return (nPrompt * 1000) / (performance.now() - t0);
}

const llama = await getLlama({ gpu: false, build: "never", logLevel: "error" as never });

async function theirs(file: string, threads: number, promptLen: number, decode: number) {
  const lm = await llama.loadModel({ modelPath: file });
  const ctx = await lm.createContext({ threads, contextSize: 1024, batchSize: 512 });
  const seq = ctx.getSequence();
  const prompt = promptTokens(promptLen, 32000) as unknown as Token[];
  const t0 = performance.now();
  let t1 = 0, n = 0;
  for await (const _ of seq.evaluate(prompt, { temperature: 0 })) {
    void _;
    if (n++ === 0) t1 = performance.now();
    if (n > decode) break;
  }
  const t2 = performance.now();
  await ctx.dispose();
  await lm.dispose();
  return { prefill: (promptLen * 1000) / (t1 - t0), decode: decode > 0 ? (decode * 1000) / (t2 - t1) : 0 };
}

const W = [28, 12, 12, 8];
console.log("\n# decode tokens/s (synthetic Llama-3.2-1B shape, greedy, after a 16-token prompt)");
console.log(row(["model / threads", "layerswarm", "llama.cpp", "ratio"], W));
const summary: string[] = [];
for (const type of types) {
  const file = benchModel(type);
  for (const th of threadList) {
    const ours = await oursDecode(file, th);
    const them = (await theirs(file, th, 16, nDecode)).decode;
    const line = row([`${type} × ${th} thread${th > 1 ? "s" : ""}`, ours.toFixed(1), them.toFixed(1), ratio(ours, them)], W);
    console.log(line);
    summary.push(line);
  }
}

console.log(`\n# prefill tokens/s (${nPrompt}-token prompt; ours in chunks of 64, llama.cpp batch 512)`);
console.log(row(["model / threads", "layerswarm", "llama.cpp", "ratio"], W));
const pfType = types[0];
for (const type of types.slice(0, nPrefill))
  for (const th of threadList) {
    const file = benchModel(type);
    const ours = await oursPrefill(file, th);
    const them = (await theirs(file, th, nPrompt, 0)).prefill;
    console.log(row([`${type} × ${th}`, ours.toFixed(1), them.toFixed(1), ratio(ours, them)], W));
  }
await llama.dispose();

console.log("\n# resident memory of a process holding layers [0, 8) of 16 (no embedding, no head)");
const file = benchModel(pfType);
const f = readGGUF(file);
let bytes = 0;
for (let i = 0; i < 8; i++) bytes += layerBytes(f, i);
const here = path.dirname(fileURLToPath(import.meta.url));
const run = (args: string[]) => JSON.parse(spawnSync(process.execPath, [path.join(here, "slice-rss.js"), ...args], { encoding: "utf8" }).stdout);
const empty = run([]);
const half = run([file, "0", "8"]);
const mib = (n: number) => (n / 2 ** 20).toFixed(0);
console.log(row(["layer bytes in file", "RSS", "RSS - empty node", "ratio"], [20, 10, 18, 8]));
console.log(row([`${mib(bytes)} MiB`, `${mib(half.rss)} MiB`, `${mib(half.rss - empty.rss)} MiB`, ratio(half.rss - empty.rss, bytes)], [20, 10, 18, 8]));
console.log(`(an empty node process: ${mib(empty.rss)} MiB; the whole file: ${mib(f.fileBytes)} MiB)`);
