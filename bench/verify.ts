// npm run bench:verify: what verifying untrusted nodes costs, each mode beside
// plain mode in the same run (rounds alternate between the modes, so the
// machine's drift hits all alike).
//   - plain: the gateway checks nothing (receipts still travel: nodes always sign)
//   - audit 5% / audit 100%: sessions re-computed by other holders after they
//     end; tokens/s counts the wall time until every audit has finished
//   - strict: every step on two disjoint routes, tokens released when both agree
// Node processes on loopback: two ranges, each held by two processes (strict
// needs two disjoint routes, audits another holder). Then the receipts' cost
// per step, measured in-process at two widths.
//
//   npm run bench:verify [-- --sessions 4 --tokens 24 --rounds 3 --threads 1]

import { generate } from "../src/model/model.js";
import { synthesize } from "../src/format/synth.js";
import { startSwarm } from "../src/testing/swarm.js";
import { args, promptTokens, ratio, row } from "./common.js";
import { Identity } from "../src/swarm/identity.js";
import { rowHashes, signReceipts, weightsDigest, ReceiptBody } from "../src/swarm/protocol/receipt.js";
import { NUMERICS_VERSION } from "../src/swarm/protocol/index.js";
import type { VerifyMode } from "../src/swarm/gateway/verify.js";

const a = args();
const SESSIONS = Number(a.get("sessions") ?? 4), TOKENS = Number(a.get("tokens") ?? 24), ROUNDS = Number(a.get("rounds") ?? 3);
const file = synthesize({ arch: "llama", dim: 512, layers: 8, heads: 8, kvHeads: 4, ffn: 1536, vocab: 4096, context: 1024, type: "Q8_0", tied: true, seed: 3 });
const W = [44, 12, 14, 8];

console.log(`\n# 1. tokens/s by verification mode (synthetic llama dim 512, 8 layers, Q8_0; [0,4) and [4,8) on two processes each; ${SESSIONS} concurrent sessions x ${TOKENS} tokens)`);
const sw = await startSwarm(file, [{ start: 0, end: 4 }, { start: 4, end: 8 }, { start: 0, end: 4 }, { start: 4, end: 8 }], { verify: { mode: "off" }, stepTimeoutMs: 120_000 }, ["--threads", a.get("threads") ?? "1"]);
const modes: { name: string; mode: VerifyMode; rate: number }[] = [
  { name: "plain", mode: "off", rate: 0 },
  { name: "audit 5%", mode: "audit", rate: 0.05 },
  { name: "audit 100%", mode: "audit", rate: 1 },
  { name: "strict", mode: "strict", rate: 0 },
];
const took = new Map<string, { tokens: number; ms: number; genMs: number }>(modes.map((m) => [m.name, { tokens: 0, ms: 0, genMs: 0 }]));
const v = sw.gw.verifier;
try {
  for (let r = 0; r < ROUNDS; r++) {
    for (const m of modes) {
      v.mode = m.mode;
      v.auditRate = m.rate;
      const t0 = performance.now();
      const counts = await Promise.all(Array.from({ length: SESSIONS }, async (_, i) => {
        let k = 0;
        for await (const _t of generate(sw.model, sw.gw, promptTokens(8 + i + r, sw.model.cfg.vocabSize), { maxTokens: TOKENS, stopAtEog: false, speculate: "off" })) k++;
        return k;
      }));
      const t1 = performance.now();
      await v.idle();
      const x = took.get(m.name)!;
      x.tokens += counts.reduce((p, q) => p + q, 0);
      x.genMs += t1 - t0;
      x.ms += performance.now() - t0;
    }
  }
  const plain = took.get("plain")!, tps = (x: { tokens: number; ms: number }) => (x.tokens * 1000) / x.ms;
  console.log(row(["mode", "tokens/s", "plain", "ratio"], W));
  for (const m of modes) {
    const x = took.get(m.name)!;
    console.log(row([m.name, tps(x).toFixed(1), tps(plain).toFixed(1), ratio(tps(x), tps(plain))], W));
  }
  // strict doubles the compute, not the latency: one session alone, ms per decoded token
  const lat = new Map<string, number[]>([["plain", []], ["strict", []]]);
  for (let r = 0; r < ROUNDS; r++)
    for (const [name, mode] of [["plain", "off"], ["strict", "strict"]] as const) {
      v.mode = mode;
      let t1 = 0, k = 0;
      for await (const _t of generate(sw.model, sw.gw, promptTokens(9 + r, sw.model.cfg.vocabSize), { maxTokens: TOKENS, stopAtEog: false, speculate: "off" })) if (k++ === 0) t1 = performance.now();
      lat.get(name)!.push((performance.now() - t1) / (k - 1));
    }
  const med = (x: number[]) => [...x].sort((p, q) => p - q)[x.length >> 1];
  console.log(row(["one session alone, ms per token", "", "", ""], W));
  console.log(row(["  strict", med(lat.get("strict")!).toFixed(2), med(lat.get("plain")!).toFixed(2), ratio(med(lat.get("strict")!), med(lat.get("plain")!))], W));
  const s = v.stats;
  console.log(`   audits ${s.audits} (clean ${s.clean}, unverified ${s.unverified}), bans ${s.bans}, strict steps ${s.strictSteps}, disagreements ${s.disagreements}, chain breaks ${s.chainBreaks}`);
  for (const p of sw.peers) await sw.gw.refresh(p).catch(() => {});
  const rs = sw.peers.map((p) => sw.gw.dir.get(p)?.record.stats as Record<string, number> | undefined);
  const ms = rs.reduce((t, x) => t + (x?.receiptMs ?? 0), 0), steps = rs.reduce((t, x) => t + (x?.receiptSteps ?? 0), 0);
  if (steps > 0) console.log(`   receipts on the nodes (hash + sign, from their records): ${((ms * 1000) / steps).toFixed(1)} µs per step over ${steps} steps`);
} finally {
  await sw.stop();
}

// The receipts' cost per step, in this process: hashing a step's input and
// output rows and signing one batch of receipts (one signature per batch,
// whatever the number of sessions in it).
console.log(`\n# 2. receipts per step, in-process (SHA-256 of each input and output row, one ed25519 signature per batch)`);
console.log(row(["", "µs per step", "of which sign", "rows"], W));
const id = await Identity.generate();
for (const [dim, rows, batch] of [[512, 1, 1], [4096, 1, 1], [4096, 1, 8], [4096, 64, 1]] as const) {
  const x = new Float32Array(rows * dim).map((_, i) => Math.sin(i));
  const weights = weightsDigest(["a", "b"]);
  const body = (s: number): ReceiptBody => {
    const ins = rowHashes(0, rows, dim, x), outs = rowHashes(0, rows, dim, x);
    return { numerics: NUMERICS_VERSION, dtype: 0, session: s.toString(16).padStart(32, "0"), hop: 0, start: 0, end: 2, weights, seq: 0, entries: ins.map((h, t) => ({ pos: t, flags: 0, input: h, output: outs[t] })) };
  };
  const N = 200;
  let tAll = 0, tSign = 0;
  for (let i = 0; i < N; i++) {
    const t0 = performance.now();
    const bodies = Array.from({ length: batch }, (_, s) => body(s));
    const t1 = performance.now();
    signReceipts(bodies, id);
    const t2 = performance.now();
    tAll += t2 - t0;
    tSign += t2 - t1;
  }
  const per = (t: number) => ((t * 1000) / N / batch).toFixed(1);
  console.log(row([`dim ${dim}, ${rows} row(s), ${batch} session(s) per batch`, per(tAll), per(tSign), String(rows)], W));
}
