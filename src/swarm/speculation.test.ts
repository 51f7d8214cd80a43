// Exact speculative decoding over a swarm (issue 11), in memory: drafts
// verified in one trip, rejected rows rolled back on every stage with signed
// receipts, golden tokens also through failover, and a node's cache and KV
// memory after a rollback exactly as if the rows had never been sent.

import { afterEach, describe, expect, it } from "vitest";
import { GenerateOptions, generate, speculationStats } from "../model/model.js";
import { MemSwarm, memSwarm } from "../testing/memswarm.js";
import { STORIES_GGUF, goldenIds } from "../testing/shared.js";
import { ROLLED_BACK } from "./protocol/index.js";
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

// Rollback receipts the gateway's ledger kept for a session, over all its epochs.
const rolledBack = (s: MemSwarm, owner: string) =>
  s.gw.verifier.ledger.epochs(owner).flatMap((e) => e.hops.flat()).filter((x) => x.entries.some((en) => en.flags & ROLLED_BACK)).length;

describe("speculation over a swarm (in memory)", () => {
  it("greedy through 3 nodes: golden 1 and 4, drafts accepted and rejected, every rollback signed and accepted by the ledger", async () => {
    sw = await memSwarm(STORIES_GGUF, [r(0, 2), r(2, 4), r(4, 5)], { verify: { mode: "audit", auditRate: 1 } });
    const g1 = goldenIds("1"), g4 = goldenIds("4");
    const a = await complete(sw, g1.slice(0, 5), { maxTokens: g1.length - 5, draftTokens: 4, session: "spec-a" });
    expect(a.ids).toEqual(g1);
    expect(a.accepted).toBeGreaterThan(0);
    expect(a.accepted).toBeLessThan(a.drafted);
    expect(rolledBack(sw, "spec-a")).toBeGreaterThan(0);
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
