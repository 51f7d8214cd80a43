// npm run bench:swarm: the swarm's costs, each beside its baseline from the same run.
//   1. per-hop overhead: decode step time of a compute-light model with the 1B's width split
//      over 2 node processes on loopback, minus the same model in one process, per hop
//      (3 hops); beside it, one 8 KB message per hop over libp2p alone and over raw TCP
//   2. time to first token of a 512-token prompt over 4 stages with 20 ms one-way
//      delay per link: chunked pipelining (64-token chunks) against the whole prompt at once
//   3. aggregate tokens/s with 1, 4 and 16 concurrent sessions over 4 stages with 20 ms links
//
//   npm run bench:swarm [-- --shape llama-1b --type Q8_0 --skip 1,2 --node-threads 1 --tokens 32 --verbose]

import { Model, generate } from "../src/model/model.js";
import { readGGUF } from "../src/format/gguf.js";
import { allocateLayers } from "../src/swarm/placement.js";
import { rangesOf, startSwarm } from "../src/testing/swarm.js";
import { args, benchModel, promptTokens, ratio, row } from "./common.js";
import { synthesize } from "../src/format/synth.js";
import { transportFloors } from "./floors.js";
import { loadSlice } from "../src/model/model.js";
import { DType, decodeStep, encodeStep } from "../src/swarm/protocol/index.js";
import { STORIES_GGUF } from "../src/testing/shared.js";

const median = (x: number[]) => [...x].sort((p, q) => p - q)[x.length >> 1];

const a = args();
const file = benchModel(a.get("type") ?? "Q8_0", a.get("shape") ?? "llama-1b");
const skip = new Set((a.get("skip") ?? "").split(","));
const DELAY = 20;

async function decodeMsPerToken(model: Model, stack: Parameters<typeof generate>[1], n = 24, each?: number[]): Promise<number> {
  const prompt = promptTokens(8, model.cfg.vocabSize);
  let t1 = 0, k = 0, last = 0;
  for await (const _ of generate(model, stack, prompt, { maxTokens: n + 1, stopAtEog: false, speculate: "off" })) {
    void _;
    const now = performance.now();
    if (k++ === 0) t1 = now;
    else each?.push(now - last);
    last = now;
  }
  return (performance.now() - t1) / (k - 1);
}
const quantile = (x: number[], q: number) => [...x].sort((p, r) => p - r)[Math.floor(q * (x.length - 1))];

const W = [50, 14, 14, 8];
if (!skip.has("1")) {
  // A compute-light model with the 1B's width (8 KB per row on the wire), so that what the
  // swarm adds is not lost in the compute's noise; --hop-shape/--hop-type for another.
  const lightShape = a.get("hop-shape");
  const light = lightShape ? benchModel(a.get("hop-type") ?? "Q8_0", lightShape)
    : synthesize({ arch: "llama", dim: 2048, layers: 2, heads: 16, kvHeads: 2, ffn: 64, vocab: 512, context: 1024, type: a.get("hop-type") ?? "Q8_0", tied: true, seed: 1 });
  console.log(`\n# 1. per-hop overhead (${lightShape ?? "compute-light: width 2048, 2 layers, ffn 64, vocab 512"} ${a.get("hop-type") ?? "Q8_0"}, decode, 1 thread per process, loopback, no added delay)`);
  // rounds alternate between the two so that the machine's drift hits both alike; medians
  const local = Model.local(light, { threads: 1 });
  const L = local.model.cfg.nLayers;
  // audits off: the gateway would recompute the first sessions itself (its nodes are new) while later rounds run;
  // nodes still sign receipts and the gateway still checks every chain: their cost is in the figure
  const sw = await startSwarm(light, rangesOf([Math.floor(L / 2), L - Math.floor(L / 2)]), { verify: { mode: "off" } });
  const a1: number[] = [], a2: number[] = [], t1: number[] = [], t2: number[] = [];
  const rounds = Number(a.get("hop-rounds") ?? 9);
  for (let r = 0; r < rounds; r++) {
    a1.push(await decodeMsPerToken(local.model, local.stack, 48, t1));
    a2.push(await decodeMsPerToken(sw.model, sw.gw, 48, t2));
  }
  const wire1 = sw.gw.stats.wire;
  await sw.stop();
  local.model.kernels.close();
  const single = median(a1), split = median(a2);
  const row8k = 4 * local.model.cfg.dim;
  const floor = await transportFloors(row8k);
  console.log(row(["", "2 processes", "1 process", "ratio"], W));
  console.log(row(["decode step (ms)", split.toFixed(2), single.toFixed(2), ratio(split, single)], W));
  console.log(row(["overhead per hop (ms), 3 hops", ((split - single) / 3).toFixed(3), "", ""], W));
  // per-token times: the 10th percentile is the machine's quieter moments (others' load
  // inflates medians, and not the two alike: 3 processes get more of a busy machine than 1)
  const q1 = quantile(t1, 0.1), q2 = quantile(t2, 0.1);
  console.log(row(["decode token, 10th percentile (ms)", q2.toFixed(2), q1.toFixed(2), ratio(q2, q1)], W));
  console.log(row(["overhead per hop at the 10th pct (ms)", ((q2 - q1) / 3).toFixed(3), "", ""], W));
  console.log(row([`libp2p alone, per hop (${row8k} B, 2 processes, ms)`, floor.libp2p.toFixed(3), "", ""], W));
  console.log(row([`raw TCP, per hop (${row8k} B, 2 processes, ms)`, floor.tcp.toFixed(3), "", ""], W));
  console.log(row(["our overhead / libp2p alone (medians, 10th pct)", ratio((split - single) / 3, floor.libp2p), ratio((q2 - q1) / 3, floor.libp2p), ""], W));
  console.log(row(["bytes per token, gateway -> first stage", String(wire1.sentBytesPerRow), `${wire1.rawBytesPerRow} values`, ratio(wire1.sentBytesPerRow, wire1.rawBytesPerRow)], W));
  console.log(row(["bytes per token, last stage -> gateway", String(wire1.resultBytesPerRow), "", ""], W));
}

// Bytes per token on every hop of a route: the gateway's own two, and what each node reports it sent on.
async function hopBytes(sw: typeof sw4): Promise<string[]> {
  const w = sw.gw.stats.wire, out = [`gw->1: ${w.sentBytesPerRow}`];
  for (const [i, p] of sw.peers.entries()) {
    await sw.gw.refresh(p).catch(() => {});
    const s = sw.gw.dir.get(p)?.record.stats;
    if (i < sw.peers.length - 1 && s?.wireRows) out.push(`${i + 1}->${i + 2}: ${Math.round((s.wireBytes ?? 0) / s.wireRows)}`);
  }
  out.push(`${sw.peers.length}->gw: ${w.resultBytesPerRow}`);
  return out;
}

process.env.LAYERSWARM_LINK_DELAY_MS = String(DELAY);
const nLayers = readGGUF(file).metadata.get("llama.block_count") as number;
const four = allocateLayers(nLayers, [0, 1, 2, 3].map((i) => ({ id: String(i), speed: 1, maxLayers: nLayers }))).map((r) => r.end - r.start);
const sw4 = skip.has("2") && skip.has("3") ? undefined! : await startSwarm(file, rangesOf(four), { stepTimeoutMs: 120_000 }, ["--threads", a.get("node-threads") ?? "1"], { LAYERSWARM_LINK_DELAY_MS: String(DELAY) });
try {
  if (!skip.has("2")) {
    console.log(`\n# 2. time to first token, 512-token prompt, 4 stages, ${DELAY} ms one-way per link`);
    const prompt = promptTokens(512, sw4.model.cfg.vocabSize);
    const ttft = async (chunk: number) => {
      const t0 = performance.now();
      for await (const _ of generate(sw4.model, sw4.gw, prompt, { maxTokens: 1, chunkSize: chunk })) void _;
      return performance.now() - t0;
    };
    await ttft(512); // warm up connections
    const piped = await ttft(64), whole = await ttft(512);
    console.log(row(["", "64-token chunks", "whole prompt", "ratio"], W));
    console.log(row(["time to first token (ms)", piped.toFixed(0), whole.toFixed(0), ratio(piped, whole)], W));
    console.log(row(["steps timed out / reroutes (all 3 runs)", `${sw4.gw.pipe.stats.timeouts} / ${sw4.gw.stats.recoveries}`, "", ""], W));
    console.log(`   bytes per token per hop (prefill; results are the last row only): ${(await hopBytes(sw4)).join(", ")}`);
  }
  if (!skip.has("3")) {
    console.log(`\n# 3. aggregate decode tokens/s, 4 stages, ${DELAY} ms one-way per link (32 tokens per session)`);
    console.log(row(["sessions", "tokens/s", "1 session", "ratio"], W));
    let base = 0;
    for (const n of [1, 4, 16]) {
      const t0 = performance.now();
      const counts = await Promise.all(Array.from({ length: n }, async (_, i) => {
        let k = 0;
        for await (const _t of generate(sw4.model, sw4.gw, promptTokens(8 + i, sw4.model.cfg.vocabSize), { maxTokens: Number(a.get("tokens") ?? 32), stopAtEog: false, speculate: "off" })) k++;
        return k;
      }));
      const tps = (counts.reduce((x, y) => x + y, 0) * 1000) / (performance.now() - t0);
      if (n === 1) base = tps;
      console.log(row([String(n), tps.toFixed(1), base.toFixed(1), ratio(tps, base)], W));
      if (a.has("verbose")) for (const p of sw4.peers) console.log("   node", (await sw4.gw.refresh(p), sw4.gw.dir.get(p)?.record.stats));
    }
  }
} finally {
  await sw4?.stop();
}

if (!skip.has("4")) {
  // What each encoding puts on a hop for real hidden states: stories260K (a trained model) and
  // the bench model, at their middle layer, 512 rows; packing timed here, and the link speed
  // below which it saves more time than it costs (pack + unpack).
  console.log(`\n# 4. wire encodings: bytes per token per hop, hidden states at the middle layer, 512 rows`);
  const W4 = [34, 12, 10, 14, 16];
  console.log(row(["model / encoding", "bytes/token", "vs f32", "pack+unpack ms", "pays below Mbit/s"], W4));
  for (const [name, path] of [["stories260K", STORIES_GGUF], [a.get("shape") ?? "llama-1b", file]] as const) {
    const m = Model.gateway(path), cfg = m.cfg, T = 512;
    const toks = promptTokens(T, cfg.vocabSize);
    const slice = loadSlice(m.file, cfg, { start: 0, end: cfg.nLayers >> 1 }, m.kernels);
    const h = slice.forward([{ session: "bench", pos: 0, T, hidden: m.embedder.embed(toks) }])[0];
    const lim = { dim: cfg.dim, maxRows: T };
    const frame = (dtype: DType) => ({ req: 1, session: "0".repeat(32), pos: 0, T, dim: cfg.dim, dtype, flags: 0, hop: 0, ext: [], hidden: h });
    const f32Bytes = encodeStep(frame(DType.F32)).length;
    for (const [label, dtype, pack] of [["f32", DType.F32, false], ["f32 packed", DType.F32, true], ["bf16", DType.BF16, false], ["bf16 packed", DType.BF16, true]] as const) {
      const plain = encodeStep(frame(dtype)).length;
      const t0 = performance.now();
      let b = encodeStep(frame(dtype), pack);
      for (let r = 1; r < 3; r++) b = encodeStep(frame(dtype), pack);
      const t1 = performance.now();
      for (let r = 0; r < 3; r++) decodeStep(b, lim);
      const ms = pack ? (performance.now() - t0) / 3 : 0;
      const saved = plain - b.length;
      const pays = pack && ms > 0 ? ((saved / ms) * 8) / 1000 : 0; // bytes per ms -> Mbit/s
      void t1;
      console.log(row([`${name} (dim ${cfg.dim}) ${label}`, (b.length / T).toFixed(0), ratio(b.length, f32Bytes), pack ? ms.toFixed(1) : "", pack ? pays.toFixed(0) : ""], W4));
    }
    m.kernels.close();
  }
}
process.exit(0);
