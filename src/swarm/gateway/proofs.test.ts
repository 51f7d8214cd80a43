// Fraud proofs between gateways (issue 9), in memory: a gateway that catches a
// cheat publishes a proof made on synthetic input; another gateway, which
// never saw the cheat misbehave, checks it by recomputation and bans it too. A
// forged proof bans nobody and gets its accuser ignored.

import { afterEach, describe, expect, it } from "vitest";
import { FaultInjector } from "../node/fault.js";
import { OpenSwarm, memOpenSwarm } from "../../testing/memswarm.js";
import { STORIES_GGUF, goldenIds } from "../../testing/shared.js";
import { until } from "../../testing/wait.js";
import { encodeProof, signAccusation } from "../protocol/proof.js";
import { FraudProof, Receipt } from "../protocol/receipt.js";
import { request } from "../rpc.js";
import { Gateway } from "./index.js";

const WANT = goldenIds("4").slice(0, 17);
let sw: OpenSwarm | undefined;
afterEach(async () => {
  await sw?.stop();
  sw = undefined;
});

// [0,2) [2,4)F [2,4)H [4,5); H priced slow so that routes go through F while F serves
async function setup() {
  sw = await memOpenSwarm(STORIES_GGUF, [], { gateways: 0 });
  const gw1 = await sw.addGateway({ verify: { mode: "audit", auditRate: 1 }, probeMs: 0 });
  const gw2 = await sw.addGateway({ verify: { mode: "off" }, probeMs: 0 });
  await sw.addNode([{ start: 0, end: 2 }]);
  const F = (await sw.addNode([{ start: 2, end: 4 }], { fault: new FaultInjector({ kind: "noise" }) })).t.peerId;
  const H = (await sw.addNode([{ start: 2, end: 4 }])).t.peerId;
  await sw.addNode([{ start: 4, end: 5 }]);
  for (const gw of [gw1, gw2]) {
    await until(async () => gw.dir.serving().length === 4, 5000, "the gateways find the four nodes");
    for (const n of gw.dir.nodes.values()) n.probe = { ms1: 1, msRows: 2, rows: 32, layers: 2, at: Date.now() };
    gw.dir.get(H)!.probe = { ms1: 500, msRows: 600, rows: 32, layers: 2, at: Date.now() };
  }
  return { sw, gw1, gw2, F, H };
}

// What gateway `gw` gets back from `peer` for layers [2, 4) on these rows: its signed receipts, honest or not.
async function receiptsOf(gw: Gateway, peer: string, input: Float32Array, T: number): Promise<Receipt[]> {
  const v = gw.verifier as unknown as { computeOn(p: string, s: number, e: number, x: Float32Array, T: number): Promise<{ receipts: Receipt[] }> };
  return (await v.computeOn(peer, 2, 4, input, T)).receipts;
}

describe("fraud proofs between gateways", () => {
  it("a cheat caught by one gateway is banned by another that checks the published proof itself", async () => {
    const { sw, gw1, gw2, F } = await setup();
    expect(await sw.complete(gw2, [1], 16)).not.toEqual(WANT); // gw2 verifies nothing itself: F's noise reaches it (and the nodes learn of gw2)
    await sw.complete(gw1, [1], 16);
    await gw1.verifier.idle();
    expect(gw1.verifier.bans.get(F)?.proven).toBe(true);
    await until(async () => gw2.verifier.bans.has(F), 10_000, "gw2 bans F on the proof");
    expect(gw1.verifier.bans.get(F)!.published).toBe(true);
    expect(gw1.verifier.stats.proofsPublished).toBe(1);
    expect(gw2.verifier.bans.get(F)!.by).toBe("proof");
    expect(gw2.verifier.bans.get(F)!.proven).toBe(true);
    expect(gw2.view.nodes().find((n) => n.peer === F)!.state).toBe("banned");
    expect(await sw.complete(gw2, [1], 16)).toEqual(WANT); // through H now
  });

  it("a forged proof against an honest node bans nobody, and its accuser is ignored from then on", async () => {
    const { sw, gw1, gw2, F, H } = await setup();
    const dim = sw.model.cfg.dim, T = 4;
    const input = sw.model.embedder.embed([5, 6, 7, 8]);
    // H's own, genuine receipts for honest rows: no recomputation proves them wrong
    const honest: FraudProof = { receipts: await receiptsOf(gw2, H, input, T), dim, input };
    const send = async (p: FraudProof) => {
      const acc = await signAccusation(encodeProof(p), gw2.identity);
      await request(gw2.transport, gw1.peerId, gw1.addrs(), { type: "fraud-proof", accusation: Buffer.from(acc.bytes).toString("base64") }, 5000);
      await gw1.verifier.idle();
    };
    await send(honest);
    expect(gw1.verifier.bans.size).toBe(0);
    expect(gw1.verifier.stats.proofsForged).toBe(1);
    expect(gw1.verifier.ignoredAccusers.has(gw2.peerId)).toBe(true);
    // once ignored, even a true proof from that accuser is not acted upon (another gateway's will be)
    const cheat: FraudProof = { receipts: await receiptsOf(gw2, F, input, T), dim, input };
    await send(cheat);
    expect(gw1.verifier.bans.size).toBe(0);
    expect(await sw.complete(gw1, [1], 16)).toBeDefined(); // still serving
  });

  it("a proof whose receipts were altered is refused as forged", async () => {
    const { sw, gw1, gw2, H } = await setup();
    const dim = sw.model.cfg.dim, T = 2;
    const input = sw.model.embedder.embed([9, 10]);
    const receipts = await receiptsOf(gw2, H, input, T);
    const bytes = new Uint8Array(receipts[0].bytes);
    bytes[10] ^= 1; // inside the body (its session id): the signature no longer covers it
    const forged = { ...receipts[0], bytes };
    const acc = await signAccusation(encodeProof({ receipts: [forged], dim, input }), gw2.identity);
    await request(gw2.transport, gw1.peerId, gw1.addrs(), { type: "fraud-proof", accusation: Buffer.from(acc.bytes).toString("base64") }, 5000).catch(() => {});
    await gw1.verifier.idle();
    expect(gw1.verifier.bans.size).toBe(0);
    expect(gw1.verifier.ignoredAccusers.has(gw2.peerId)).toBe(true);
  });
});
