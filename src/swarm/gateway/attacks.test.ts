// Attacks on verification itself (issue 9; found by a review of the first
// version): ways to get an honest node banned, or to escape a ban. Each was
// shown to work before its fix; each must now fail.

import { randomBytes } from "node:crypto";
import { afterEach, describe, expect, it } from "vitest";
import { Model, loadSlice } from "../../model/model.js";
import { MemSwarm, OpenSwarm, memOpenSwarm, memSwarm } from "../../testing/memswarm.js";
import { STORIES_GGUF, goldenIds } from "../../testing/shared.js";
import { until } from "../../testing/wait.js";
import { FaultInjector } from "../node/fault.js";
import { Identity } from "../identity.js";
import { DType, wireRound } from "../protocol/frames.js";
import { encodeProof, signAccusation } from "../protocol/proof.js";
import { FraudProof, ReceiptBody, Receipt, checkFraudProof, rowHash, rowHashes, signReceipts, weightsDigest } from "../protocol/receipt.js";
import { NUMERICS_VERSION } from "../protocol/version.js";
import { request } from "../rpc.js";
import { AuditDeps, auditEpoch } from "./audit.js";
import { ReceiptLedger } from "./ledger.js";

const WANT = goldenIds("4").slice(0, 25);
let sw: MemSwarm | OpenSwarm | undefined;
afterEach(async () => {
  await sw?.stop();
  sw = undefined;
});

describe("rewriting history", () => {
  it("a stage that sends its successor an earlier position again (a cache rewrite the gateway never sees) is refused: answers exact, the successor not banned", async () => {
    const s = await memSwarm(STORIES_GGUF, [], { verify: { mode: "audit", auditRate: 1 } });
    sw = s;
    type Emit = (x: { f: { hop: number; pos: number; T: number; dim: number } }, out: Float32Array, receipt: Receipt, outHashes: Uint8Array[]) => void;
    const M = (await s.addNode([{ start: 0, end: 2 }])).node as unknown as { emit: Emit; identity: Identity };
    await s.addNode([{ start: 2, end: 4 }]);
    await s.addNode([{ start: 4, end: 5 }]);
    await s.gw.waitForCoverage(2000);
    const H = s.transports[1].peerId;
    const orig = M.emit.bind(M);
    let injected = 0;
    M.emit = (x, out, receipt, outHashes) => {
      orig(x, out, receipt, outHashes);
      if (x.f.hop === 0 && x.f.pos === 5 && x.f.T === 1 && !injected++) {
        const junk = out.map((_, i) => (i % 2 ? 30 : -30));
        const hashes = rowHashes(x.f.pos, x.f.T, x.f.dim, junk);
        const [r] = signReceipts([{ ...receipt, entries: receipt.entries.map((e, t) => ({ ...e, output: hashes[t] })) }], M.identity);
        orig(x, junk, r, hashes); // position 5 again
      }
    };
    expect(await s.complete([1], 24)).toEqual(WANT);
    await s.gw.verifier.idle();
    expect(injected).toBe(1);
    expect(s.gw.verifier.bans.has(H)).toBe(false);
  });

  it("a gateway cannot make an honest node compute a position twice, so it cannot build a 'proof' from a rewritten history", async () => {
    const s = await memOpenSwarm(STORIES_GGUF, [], { gateways: 0 });
    sw = s;
    const gw1 = await s.addGateway({ verify: { mode: "audit", auditRate: 1 }, probeMs: 0 });
    const gw2 = await s.addGateway({ verify: { mode: "off" }, probeMs: 0 });
    await s.addNode([{ start: 0, end: 2 }]);
    const H = (await s.addNode([{ start: 2, end: 4 }])).t.peerId;
    await s.addNode([{ start: 4, end: 5 }]);
    for (const gw of [gw1, gw2]) await until(async () => gw.dir.serving().length === 3, 5000, "the gateways find the nodes");
    const dim = s.model.cfg.dim, a = s.model.embedder.embed([5, 6]), b = s.model.embedder.embed([9]);
    const ws = await gw2.sessions.wireFor("evil", [{ id: H, start: 2, end: 4 }]);
    const e = gw2.verifier.ledger.open("evil", ws.sid, [{ peer: H, start: 2, end: 4 }]);
    const hop = [{ peer: H, addrs: gw2.dir.get(H)!.record.addrs }];
    await gw2.pipe.send(ws, hop, { session: "evil", pos: 0, T: 2, hidden: a });
    await expect(gw2.pipe.send(ws, hop, { session: "evil", pos: 0, T: 1, hidden: b })).rejects.toThrow(/positions only grow/);
    const input = new Float32Array(2 * dim);
    input.set(b, 0), input.set(a.subarray(dim), dim);
    const acc = await signAccusation(encodeProof({ receipts: [...e.hops[0]], dim, input }), gw2.identity);
    await request(gw2.transport, gw1.peerId, gw1.addrs(), { type: "fraud-proof", accusation: Buffer.from(acc.bytes).toString("base64") }, 5000);
    await gw1.verifier.idle();
    expect(gw1.verifier.bans.has(H)).toBe(false);
    expect(gw1.verifier.ignoredAccusers.has(gw2.peerId)).toBe(true);
  });
});

// Synthetic receipts for the ledger and the audit, on rows of width 4.
const dim = 4, sid = "ab".repeat(16), W = weightsDigest(["x"]);
const rows = (v: number, T = 1) => new Float32Array(T * dim).fill(v);
const body = (o: Partial<ReceiptBody> & { pos: number; inp: Float32Array; out: Float32Array }): ReceiptBody => ({
  numerics: NUMERICS_VERSION, dtype: DType.F32, session: sid, hop: o.hop ?? 0, start: o.start ?? 0, end: o.end ?? 1, weights: o.weights ?? W, seq: o.seq ?? 0,
  entries: [{ pos: o.pos, flags: 0, input: rowHash(o.pos, o.inp), output: rowHash(o.pos, o.out) }],
});
const ledger = () => new ReceiptLedger({ weights: () => W, dtype: () => DType.F32 });

describe("the chain of receipts", () => {
  it("a stage that signs two receipts for one step, one swapped into the chain by a colluder, gets nobody banned on the spot: an audit decides", async () => {
    const [A, B, C] = await Promise.all([Identity.generate(), Identity.generate(), Identity.generate()]);
    const route = [{ peer: A.peerId, start: 0, end: 1 }, { peer: B.peerId, start: 1, end: 2 }, { peer: C.peerId, start: 2, end: 3 }];
    const led = ledger();
    led.open("owner", sid, route);
    const sent = rows(1), x1 = rows(2), x2 = rows(99), y = rows(3), z = rows(4);
    const [R2] = signReceipts([body({ hop: 0, pos: 0, inp: sent, out: x2 })], A); // not what A sent B
    const [RB] = signReceipts([body({ hop: 1, start: 1, end: 2, pos: 0, inp: x1, out: y })], B);
    const [RC] = signReceipts([body({ hop: 2, start: 2, end: 3, pos: 0, inp: y, out: z })], C);
    const b = led.check(sid, 0, 1, dim, sent, [R2.bytes, RB.bytes, RC.bytes], z)!;
    expect(b.evidence).toEqual([]); // no instant ban
    expect(b.audit).toBe(true);
    expect(led.get(sid)!.disputed[0]).toHaveLength(1); // A's swapped receipt, which the audit holds A to
  });

  it("receipts numbered out of turn, or signed with other weights, break the chain", async () => {
    const F = await Identity.generate();
    const led = ledger();
    led.open("owner", sid, [{ peer: F.peerId, start: 0, end: 1 }]);
    const [r0] = signReceipts([body({ pos: 0, inp: rows(0), out: rows(5) })], F);
    expect(led.check(sid, 0, 1, dim, rows(0), [r0.bytes], rows(5))).toBeUndefined();
    const [again] = signReceipts([body({ pos: 1, inp: rows(1), out: rows(5), seq: 0 })], F);
    expect(led.check(sid, 1, 1, dim, rows(1), [again.bytes], rows(5))?.reason).toMatch(/numbered its receipt 0, its next is 1/);
    const [other] = signReceipts([body({ pos: 1, inp: rows(1), out: rows(5), seq: 1, weights: weightsDigest(["y"]) })], F);
    const b = led.check(sid, 1, 1, dim, rows(1), [other.bytes], rows(5))!;
    expect(b.reason).toMatch(/not the route's/);
    expect(b.evidence).toHaveLength(1); // its own signed word: certain
  });
});

describe("audits that cannot be derailed", () => {
  const deps = (banned: string[]): AuditDeps => ({
    dim,
    inputRows: (t) => {
      const x = new Float32Array(t.length * dim);
      t.forEach((_, p) => x.fill(p, p * dim, (p + 1) * dim));
      return x;
    },
    computeOn: async () => {
      throw new Error("no auditor");
    },
    auditors: () => [],
    computeLocal: async (_s, _e, _x, T) => rows(7, T),
    ban: (peer) => void banned.push(peer),
  });
  async function cheat() {
    const F = await Identity.generate(), led = ledger();
    led.open("owner", sid, [{ peer: F.peerId, start: 0, end: 1 }]);
    for (let p = 0; p < 2; p++) {
      const [r] = signReceipts([body({ pos: p, inp: rows(p), out: rows(0), seq: p })], F); // wrong: the layers give 7
      expect(led.check(sid, p, 1, dim, rows(p), [r.bytes], rows(0))).toBeUndefined();
    }
    return { F, e: led.get(sid)! };
  }

  it("a cheat is banned with a proof", async () => {
    const { F, e } = await cheat(), banned: string[] = [];
    expect((await auditEpoch(e, [1, 1], deps(banned))).verdict).toBe("banned");
    expect(banned).toEqual([F.peerId]);
  });

  it("a receipt twice in a stage's history (a dispute repeating one) makes that stage unverified, not the audit throw", async () => {
    const { e } = await cheat(), banned: string[] = [];
    e.disputed[0].push(e.hops[0][0]);
    const o = await auditEpoch(e, [1, 1], deps(banned));
    expect(o).toMatchObject({ verdict: "unverified" });
  });

  it("a noisy node that signs a fresh weights digest on every receipt is banned (it once made every audit throw)", async () => {
    const s = await memSwarm(STORIES_GGUF, [], { verify: { mode: "audit", auditRate: 1 } });
    sw = s;
    await s.addNode([{ start: 0, end: 2 }]);
    const F = (await s.addNode([{ start: 2, end: 4 }], { fault: new FaultInjector({ kind: "noise" }) })).node as unknown as { weightsOf: () => Uint8Array };
    await s.addNode([{ start: 4, end: 5 }]);
    await s.gw.waitForCoverage(2000);
    F.weightsOf = () => randomBytes(32);
    await s.complete([1], 8).catch(() => {}); // its steps are refused or rerouted; no route may be left
    await s.gw.verifier.idle();
    expect(s.gw.verifier.bans.has(s.transports[1].peerId)).toBe(true);
  });
});

describe("rounding", () => {
  it("rows rounded to bf16 and signed as such on an f32 link are proven wrong (a receipt names its link's dtype)", async () => {
    const m = Model.gateway(STORIES_GGUF), d = m.cfg.dim, T = 4;
    const input = m.embedder.embed([5, 6, 7, 8]);
    const honest = loadSlice(m.file, m.cfg, { start: 2, end: 4 }, m.kernels).forward([{ session: "a", pos: 0, T, hidden: input }])[0];
    const cheat = wireRound(honest, DType.BF16);
    const F = await Identity.generate(), ins = rowHashes(0, T, d, input), outs = rowHashes(0, T, d, cheat);
    const receipts = signReceipts([{ numerics: NUMERICS_VERSION, dtype: DType.F32, session: "cd".repeat(16), hop: 0, start: 2, end: 4, weights: W, seq: 0,
      entries: ins.map((h, t) => ({ pos: t, flags: 0, input: h, output: outs[t] })) }], F);
    const judge = loadSlice(m.file, m.cfg, { start: 2, end: 4 }, m.kernels);
    const proof: FraudProof = { receipts, dim: d, input };
    const v = await checkFraudProof(proof, async (_s, _e, x, n) => judge.forward([{ session: "j", pos: 0, T: n, hidden: x }])[0]);
    expect(v.proven).toBe(true);
  });
});
