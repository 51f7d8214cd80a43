// Untrusted nodes with real processes (issue 9's acceptance): node child
// processes on loopback, one of them started with LAYERSWARM_TEST_FAULT of
// each kind in turn, and a gateway in this process over libp2p.
//
//   strict: two disjoint routes, [0,2) -> [2,5) each, the faulty node the last
//           stage of one of them. Every completion must equal the honest
//           single-process tokens, and the faulty node must end banned.
//   audit:  every session audited; the faulty node is the middle stage of the
//           route, an honest holder of its layers (priced slow so that routes
//           prefer the cheat) audits it. It must be banned after the first
//           session it touched, and later completions must be exact.
//
// The in-memory suite (gateway/verify.test.ts) covers the same and more in
// milliseconds; this proves the real transport and the real processes agree.

import "./polyfill.js";
import * as path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { generate } from "../model/model.js";
import { Gateway, GatewayOptions } from "./gateway/index.js";
import { Model } from "../model/model.js";
import { fineTune } from "../testing/finetune.js";
import { STORIES_GGUF, goldenIds, tmpDir } from "../testing/shared.js";
import { spawnNode, startTestGateway } from "../testing/swarm.js";
import { ChildProcess } from "node:child_process";

const WANT = goldenIds("4").slice(0, 33); // BOS, then 32 greedy tokens
const cheap = fineTune(STORIES_GGUF, path.join(tmpDir("layerswarm-verify-proc-"), "cheap.gguf"), ["blk.3.ffn_down.weight"]);
const KINDS = ["noise", "noise-after:8", "noise-rate:0.3", "skip-layer", `cheap-model:${cheap}`, "bad-receipt"];

let procs: ChildProcess[] = [];
let gw: Gateway | undefined;
afterEach(async () => {
  for (const p of procs) p.kill("SIGKILL");
  procs = [];
  await gw?.stop();
  gw = undefined;
});

async function gateway(opts: GatewayOptions): Promise<{ gw: Gateway; model: Model }> {
  const started = await startTestGateway(STORIES_GGUF, { probeMs: 0, ...opts });
  gw = started.gw;
  return started;
}

// Nodes started at once; returns their peer ids in the order given.
async function nodes(g: Gateway, spec: { layers: string; fault?: string }[]): Promise<string[]> {
  const started = await Promise.all(spec.map((s) => spawnNode(STORIES_GGUF, g.addrs()[0], s.layers, [], s.fault ? { LAYERSWARM_TEST_FAULT: s.fault } : {})));
  procs.push(...started.map((s) => s.proc));
  const until = Date.now() + 15_000;
  while (g.serving().length < spec.length && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
  return started.map((s) => s.peer);
}

async function complete(model: Model, g: Gateway, verify?: "strict"): Promise<number[]> {
  const out: number[] = [];
  for await (const t of generate(model, g, [1], { maxTokens: WANT.length - 1, verify })) out.push(t.id);
  return [1, ...out];
}

describe("a faulty node process of each kind", () => {
  it.each(KINDS)("strict (per request): %s — exact answers, the node ends banned", async (fault) => {
    const { gw, model } = await gateway({ verify: { mode: "audit", auditRate: 0 } });
    const [, , , F] = await nodes(gw, [{ layers: "0:2" }, { layers: "0:2" }, { layers: "2:5" }, { layers: "2:5", fault }]);
    expect(await complete(model, gw, "strict")).toEqual(WANT);
    expect(await complete(model, gw, "strict")).toEqual(WANT);
    await gw.verifier.idle();
    expect(gw.verifier.bans.has(F)).toBe(true);
    expect([...gw.verifier.bans.keys()]).toEqual([F]);
    expect(gw.view.nodes().find((n) => n.peer === F)?.state).toBe("banned");
    const ban = gw.verifier.bans.get(F)!;
    process.stdout.write(`verify.process: strict: ${fault}: banned after ${ban.steps} steps through it (${ban.by}${ban.proven ? ", proven" : ""}); ${gw.verifier.stats.disagreements} disagreements\n`);
  }, 120_000);

  it.each(KINDS)("audit, every session audited: %s — banned after its first session, later answers exact", async (fault) => {
    const { gw, model } = await gateway({ verify: { mode: "audit", auditRate: 1 } });
    const [, F, , H] = await nodes(gw, [{ layers: "0:2" }, { layers: "2:4", fault }, { layers: "4:5" }, { layers: "2:4" }]);
    for (const n of gw.dir.nodes.values()) n.probe = { ms1: 1, msRows: 2, rows: 32, layers: 2, at: Date.now() };
    gw.dir.get(H)!.probe = { ms1: 500, msRows: 600, rows: 32, layers: 2, at: Date.now() };
    await complete(model, gw);
    await gw.verifier.idle();
    const ban = gw.verifier.bans.get(F);
    expect(ban).toBeDefined();
    expect(ban!.proven).toBe(true);
    expect(await complete(model, gw)).toEqual(WANT);
    expect(await complete(model, gw)).toEqual(WANT);
    await gw.verifier.idle();
    expect([...gw.verifier.bans.keys()]).toEqual([F]);
    process.stdout.write(`verify.process: ${fault}: banned after ${ban!.steps} steps through it (${ban!.by})\n`);
  }, 120_000);
});
