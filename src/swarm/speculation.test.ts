// Exact speculative decoding over a swarm (issue 11), in memory: drafts
// verified in one trip, rejected rows rolled back on every stage with signed
// receipts, golden tokens also through failover, and a node's cache and KV
// memory after a rollback exactly as if the rows had never been sent.

import { afterEach, describe, expect, it } from "vitest";
import { GenerateOptions, generate, speculationStats } from "../model/model.js";
import { MemSwarm, memSwarm } from "../testing/memswarm.js";
import { STORIES_GGUF, goldenIds } from "../testing/shared.js";
import { DType, NUMERICS_VERSION, ROLLED_BACK, ReceiptBody, openReceipt, rowHash, signReceipts, weightsDigest } from "./protocol/index.js";
import { Identity } from "./identity.js";
import { ReceiptLedger } from "./gateway/ledger.js";
import { MemoryTransport } from "./memory.js";
import { request } from "./rpc.js";

const r = (start: number, end: number) => ({ start, end });

let sw: MemSwarm | undefined;
afterEach(async () => {
  await sw?.stop();
  sw = undefined;
});

async function complete(s: MemSwarm, prompt: number[], opts: GenerateOptions, onToken?: (n: number) => void) {
  const out: number[] = [];
  const d0 = speculationStats.drafted, a0 = speculationStats.accepted;
  for await (const t of generate(s.model, s.gw, prompt, opts)) {
    out.push(t.id);
    onToken?.(out.length);
  }
  return { ids: [...prompt, ...out], drafted: speculationStats.drafted - d0, accepted: speculationStats.accepted - a0 };
}

// The rollback receipts the gateway's ledger accepts from now on (read as they
// arrive: a session's receipts are forgotten once its audit is done).
function acceptedRollbacks(s: MemSwarm): Uint8Array[] {
  const led = s.gw.verifier.ledger, orig = led.rollback.bind(led), kept: Uint8Array[] = [];
  led.rollback = (sid, pos, receipts) => {
    const b = orig(sid, pos, receipts);
    if (!b) for (const r of receipts) if (r) kept.push(r);
    return b;
  };
  return kept;
}

describe("the ledger's rollback receipts", () => {
  const dim = 4, sid = "cd".repeat(16), W = weightsDigest(["w"]);
  const rows = (v: number) => new Float32Array(dim).fill(v);
  const body = (hop: number, seq: number, entries: ReceiptBody["entries"]): ReceiptBody =>
    ({ numerics: NUMERICS_VERSION, dtype: DType.F32, session: sid, hop, start: hop, end: hop + 1, weights: W, seq, entries });
  const step = (hop: number, pos: number) => body(hop, pos, [{ pos, flags: 0, input: rowHash(pos, rows(hop + pos)), output: rowHash(pos, rows(hop + 1 + pos)) }]);
  const back = (hop: number, seq: number, pos: number, flags = ROLLED_BACK) => body(hop, seq, [{ pos, flags, input: new Uint8Array(16), output: new Uint8Array(16) }]);

  it("takes each stage's next receipt withdrawing exactly the positions from pos on, and nothing else", async () => {
    const [A, B] = await Promise.all([Identity.generate(), Identity.generate()]);
    const fresh = async () => {
      const led = new ReceiptLedger({ weights: () => W, dtype: () => DType.F32 });
      led.open("owner", sid, [{ peer: A.peerId, start: 0, end: 1 }, { peer: B.peerId, start: 1, end: 2 }]);
      for (const pos of [0, 1, 2]) {
        const [ra] = signReceipts([step(0, pos)], A), [rb] = signReceipts([step(1, pos)], B);
        expect(led.check(sid, pos, 1, dim, rows(pos), [ra.bytes, rb.bytes], rows(2 + pos))).toBeUndefined();
      }
      return led;
    };
    const good = async () => [signReceipts([back(0, 3, 1)], A)[0].bytes, signReceipts([back(1, 3, 1)], B)[0].bytes];
    const led = await fresh();
    expect(led.rollback(sid, 3, [])).toBeUndefined(); // nothing at or after 3: nothing asked
    expect(led.rollback(sid, 1, await good())).toBeUndefined();
    expect(led.get(sid)!.upTo).toBe(1);
    // the next step at position 1 is numbered after the rollback
    const [ra] = signReceipts([body(0, 4, step(0, 1).entries)], A), [rb] = signReceipts([body(1, 4, step(1, 1).entries)], B);
    expect(led.check(sid, 1, 1, dim, rows(1), [ra.bytes, rb.bytes], rows(3))).toBeUndefined();
    const bad: [string, () => Promise<(Uint8Array | undefined)[]>, RegExp][] = [
      ["a stage's receipt missing", async () => [(await good())[0], undefined], /hop 1 answered a rollback to position 1 without its receipt/],
      ["not withdrawn (flags 0)", async () => [(await good())[0], signReceipts([back(1, 3, 1, 0)], B)[0].bytes], /does not withdraw exactly/],
      ["another position", async () => [(await good())[0], signReceipts([back(1, 3, 2)], B)[0].bytes], /does not withdraw exactly/],
      ["out of turn", async () => [(await good())[0], signReceipts([back(1, 5, 1)], B)[0].bytes], /numbered its rollback receipt 5, its next is 3/],
      ["signed by another", async () => [(await good())[0], signReceipts([back(1, 3, 1)], A)[0].bytes], /not its own/],
    ];
    for (const [what, receipts, why] of bad) {
      const l = await fresh();
      expect(l.rollback(sid, 1, await receipts())?.reason, what).toMatch(why);
      expect(l.get(sid)!.upTo, what).toBe(3); // nothing kept
    }
  });
});

describe("speculation over a swarm (in memory)", () => {
  it("greedy through 3 nodes: golden 1 and 4, drafts accepted and rejected, every rollback signed and accepted by the ledger", async () => {
    sw = await memSwarm(STORIES_GGUF, [r(0, 2), r(2, 4), r(4, 5)], { verify: { mode: "audit", auditRate: 1 } });
    const g1 = goldenIds("1"), g4 = goldenIds("4");
    const withdrawn = acceptedRollbacks(sw);
    const a = await complete(sw, g1.slice(0, 5), { maxTokens: g1.length - 5, draftTokens: 4, });
    expect(a.ids).toEqual(g1);
    expect(a.accepted).toBeGreaterThan(0);
    expect(a.accepted).toBeLessThan(a.drafted);
    // every rejected draft was withdrawn on all 3 stages, each by a receipt its node signed
    expect(withdrawn.length).toBeGreaterThan(0);
    expect(withdrawn.length % 3).toBe(0);
    const peers = sw.transports.map((t) => t.peerId);
    for (const x of withdrawn.slice(0, 6)) {
      const r = await openReceipt(x); // the signature verifies with its signer's key
      expect(peers).toContain(r.signer);
      expect(r.entries.map((e) => e.flags)).toEqual([ROLLED_BACK]);
    }
    const b = await complete(sw, [1], { maxTokens: g4.length - 1, draftTokens: 6 });
    expect(b.ids).toEqual(g4);
    await sw.gw.verifier.idle();
    const v = sw.gw.verifier.stats;
    expect(v.chainBreaks).toBe(0);
    expect(v.audits).toBeGreaterThanOrEqual(2);
    expect(v.clean).toBe(v.audits); // the audits read rolled back positions as never sent
    expect(sw.gw.stats.recoveries).toBe(0); // no rollback failed (a failed one moves the session)
  });

  it("seeded sampling: the same tokens with speculation off and on, for several k", async () => {
    sw = await memSwarm(STORIES_GGUF, [r(0, 3), r(3, 5)]);
    const base: GenerateOptions = { maxTokens: 80, temperature: 0.8, topK: 40, seed: 77 };
    const prompt = goldenIds("1").slice(0, 5);
    const off = await complete(sw, prompt, { ...base, speculate: "off" });
    expect(off.drafted).toBe(0);
    for (const k of [2, 5]) {
      const on = await complete(sw, prompt, { ...base, draftTokens: k });
      expect(on.ids).toEqual(off.ids);
      expect(on.drafted).toBeGreaterThan(0);
    }
  });

  it("a gateway that runs the first and last layers itself rolls them back too: golden 1", async () => {
    sw = await memSwarm(STORIES_GGUF, [r(1, 3), r(3, 4)], { localLayers: 1, localTail: 1 });
    const want = goldenIds("1");
    const withdrawn = acceptedRollbacks(sw);
    // as on a node: the gateway's own slices take a step only at the end of the session's cache (a slice
    // would rewrite silently from an earlier position: this fails if the gateway did not roll them back)
    let checked = 0;
    for (const slice of [sw.gw.local.head!, sw.gw.local.tail!]) {
      const forward = slice.forward.bind(slice);
      slice.forward = (steps, signal, layers) => {
        for (const st of steps) if (!st.session.includes("\u0000")) expect(st.pos, "a step at the end of the cache").toBe(slice.sessions.get(st.session)?.length ?? 0), checked++;
        return forward(steps, signal, layers);
      };
    }
    const a = await complete(sw, want.slice(0, 5), { maxTokens: want.length - 5, draftTokens: 4 });
    expect(a.ids).toEqual(want);
    expect(a.accepted).toBeGreaterThan(0);
    expect(withdrawn.length).toBeGreaterThan(0);
    expect(checked).toBeGreaterThan(100);
    expect(sw.gw.stats.recoveries).toBe(0);
  });

  it("a node killed mid-answer: golden 1 all the same", async () => {
    sw = await memSwarm(STORIES_GGUF, [r(0, 2), r(2, 3), r(3, 4), r(4, 5), r(2, 3)], { stepTimeoutMs: 2000 });
    const want = goldenIds("1");
    let killed = false;
    const a = await complete(sw, want.slice(0, 5), { maxTokens: want.length - 5, draftTokens: 4 }, (n) => {
      if (n >= 30 && !killed) {
        killed = true;
        const used = sw!.gw.sessions.all.values().next().value!.route.map((s) => s.id);
        const victim = sw!.transports.findIndex((t) => t.peerId === used[1]);
        void sw!.transports[victim].stop();
      }
    });
    expect(killed).toBe(true);
    expect(a.ids).toEqual(want);
    expect(a.accepted).toBeGreaterThan(0);
    expect(sw.gw.stats.recoveries).toBeGreaterThanOrEqual(1);
  });

  it("a rollback leaves a node's cache and KV memory exactly as if the rows had never been sent", async () => {
    sw = await memSwarm(STORIES_GGUF, [r(0, 5)]);
    const node = sw.nodes[0], slice = node.slices[0], toks = goldenIds("1").slice(0, 40);
    const step = (session: string, pos: number, T: number) =>
      sw!.gw.forward([{ session, pos, T, tokens: toks.slice(pos, pos + T), hidden: sw!.model.embedder.embed(toks.slice(pos, pos + T)) }]);
    const wireOf = (owner: string) => sw!.gw.sessions.all.get(owner)!.wire.sid;
    // "a": 10 rows, then 22 more (the cache grows to 32 positions), rolled back to 13; "b": only ever 13 rows
    await step("a", 0, 10);
    await step("a", 10, 22);
    const grown = slice.budget.usedBytes;
    await sw.gw.rollback("a", 13);
    const rolled = slice.budget.usedBytes;
    await step("b", 0, 10);
    await step("b", 10, 3);
    const a = slice.sessions.get(wireOf("a"))!, b = slice.sessions.get(wireOf("b"))!;
    expect([a.length, a.capacity, a.bytes]).toEqual([13, 16, b.bytes]);
    expect(slice.budget.usedBytes).toBe(2 * b.bytes);
    expect([grown, rolled]).toEqual([2 * b.bytes, b.bytes]); // 32 positions, then 16
    expect(node.record().capacity.kvUsedBytes).toBe(2 * b.bytes);
    for (let l = 0; l < a.nLayers; l++) {
      expect(Buffer.from(a.k[l].buffer).equals(Buffer.from(b.k[l].buffer))).toBe(true);
      expect(Buffer.from(a.v[l].buffer).equals(Buffer.from(b.v[l].buffer))).toBe(true);
    }
    // the gateway's history forgot them too: both go on alike, and a replay would not resend them
    expect(sw.gw.sessions.tokens("a", 13)).toEqual(toks.slice(0, 13));
    expect(sw.gw.sessions.tokens("a", 14)).toBeUndefined();
    const [ha] = await step("a", 13, 4), [hb] = await step("b", 13, 4);
    expect(Buffer.from(ha.buffer).equals(Buffer.from(hb.buffer))).toBe(true);
    // only the session's own gateway may roll it back: another peer is told there is no such session
    const stranger = await MemoryTransport.create(sw.net, "10.9.9.9");
    await expect(request(stranger, node.peerId, sw.transports[0].addrs(), { type: "rollback", session: wireOf("a"), pos: 3 }, 5000)).rejects.toMatchObject({ code: "UNKNOWN_SESSION" });
    expect(a.length).toBe(17);
    await stranger.stop();
  });
});
