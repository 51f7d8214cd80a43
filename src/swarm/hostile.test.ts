// The hostile-peer suite: every attack found against the first swarm protocol,
// scripted against an in-memory swarm with the real node and gateway code.
// Each asserts that it achieves nothing: the victim's tokens are exactly the
// golden ones, nothing it should not read is readable, the processes keep
// serving, and memory stays bounded. Attackers use many identities.

import { afterEach, describe, expect, it, vi } from "vitest";
import { LayerswarmError } from "../errors.js";
import { SwarmMonitor } from "../api/monitor.js";
import { STORIES_GGUF, goldenIds } from "../testing/shared.js";
import { MemSwarm, memSwarm } from "../testing/memswarm.js";
import { MemoryNetwork, MemoryTransport } from "./memory.js";
import { PeerGate } from "./policy.js";
import {
  DType, Ext, FLAG_PACKED, FrameType, MAX_CONTROL_BYTES, PROTOCOLS, PROTOCOL_VERSION, Request, StepFrame, decodeStep, encodeError, encodeResult, encodeStep,
  frameType, maxFrameBytes, signGrant,
} from "./protocol/index.js";
import { request } from "./rpc.js";
import { Channel } from "./transport.js";

const r = (start: number, end: number) => ({ start, end });
const WANT = goldenIds("4").slice(0, 61); // BOS + 60 tokens
const DIM = 64;

let sw: MemSwarm | undefined;
afterEach(async () => {
  await sw?.stop();
  sw = undefined;
});

// An attacker: one identity on the in-memory network, speaking our protocol by hand.
class Attacker {
  private chans = new Map<string, Channel>();
  constructor(readonly t: MemoryTransport) {}
  static async create(net: MemoryNetwork, ip = "10.66.0.1"): Promise<Attacker> {
    return new Attacker(await MemoryTransport.create(net, ip));
  }
  get peer() {
    return this.t.peerId;
  }
  async send(to: string, msg: Uint8Array): Promise<void> {
    let ch = this.chans.get(to);
    if (!ch || ch.closed) {
      ch = await this.t.dial(to, [], PROTOCOLS.steps[0], { maxMessageBytes: 1 << 20 });
      this.chans.set(to, ch);
      void (async () => {
        try {
          for await (const _ of ch!.messages()) void _;
        } catch { /* reset */ }
      })();
    }
    await ch.send(msg);
  }
  ask(to: string, req: Request) {
    return request(this.t, to, [], req, 2000);
  }
  grant(session: string, hops: { peer: string; start: number; end: number }[]) {
    return signGrant({ v: PROTOCOL_VERSION, gateway: this.peer, gatewayAddrs: this.t.addrs(), session, issuedAt: Date.now(), hops: hops.map((h) => ({ ...h, addrs: [] })) }, this.t.identity);
  }
}

const sid = () => Buffer.from(crypto.getRandomValues(new Uint8Array(16))).toString("hex");
const step = (session: string, o: Partial<StepFrame> = {}): StepFrame => ({
  req: 1, session, pos: 0, T: 1, dim: DIM, dtype: DType.F32, flags: 0, hop: 0, ext: [], hidden: new Float32Array(DIM).fill(0.5), ...o,
});
const settle = () => new Promise((res) => setTimeout(res, 20));

// Frames that node 0 receives from the gateway: what an insider on the route learns.
function watchFirstStage(s: MemSwarm): StepFrame[] {
  const seen: StepFrame[] = [];
  s.transports[0].tap = (from, protocol, m) => {
    if (protocol === PROTOCOLS.steps[0] && frameType(m) === FrameType.STEP && from === s.gw.peerId) seen.push(decodeStep(m, { dim: DIM, maxRows: 4096 }));
  };
  return seen;
}

describe("hostile peers (in-memory swarm, real node and gateway code)", () => {
  it("joining as a node: an allow-listed gateway refuses it; an open one never hands it raw embedding rows with --local-layers", async () => {
    // allow-list: only the honest nodes may serve
    sw = await memSwarm(STORIES_GGUF, [], { gate: new PeerGate({ allow: new Set() }) });
    const honest = [await sw.addNode([r(0, 5)]).catch((e) => e)];
    expect(String(honest[0])).toMatch(/FORBIDDEN|--allow/);
    await sw.stop();

    // open gateway keeping layer 0 and layer 4 to itself; the only remote stage is a node someone else runs
    sw = await memSwarm(STORIES_GGUF, [r(0, 5)], { localLayers: 1, localTail: 1 });
    const rows: Float32Array[] = [];
    sw.transports[0].tap = (_f, p, m) => {
      if (p === PROTOCOLS.steps[0] && frameType(m) === FrameType.STEP) {
        const f = decodeStep(m, { dim: DIM, maxRows: 4096 });
        for (let t = 0; t < f.T; t++) rows.push(f.hidden.subarray(t * DIM, (t + 1) * DIM));
      }
    };
    expect(await sw.complete([1], 60)).toEqual(WANT); // the same tokens with layers kept local
    const emb = sw.model.embedder.embed(Array.from({ length: sw.model.cfg.vocabSize }, (_, i) => i));
    const exact = rows.filter((row) => {
      for (let v = 0; v < sw!.model.cfg.vocabSize; v++) if (emb.subarray(v * DIM, (v + 1) * DIM).every((x, i) => x === row[i])) return true;
      return false;
    });
    expect(rows.length).toBeGreaterThan(50);
    expect(exact).toHaveLength(0); // no row the node saw is an embedding row
  });

  it("injected RESULT and ERROR frames, by a stranger and by a stage that is not the last, change nothing", async () => {
    sw = await memSwarm(STORIES_GGUF, [r(0, 2), r(2, 4), r(4, 5)]);
    const seen = watchFirstStage(sw);
    const strangers = await Promise.all(Array.from({ length: 20 }, (_, i) => Attacker.create(sw!.net, `10.66.0.${i}`)));
    const insider = new Attacker(sw.transports[0]); // node 0's own identity, on the route
    const ids = await sw.complete([1], 60, () => {
      const f = seen[seen.length - 1];
      if (!f) return;
      const noise = new Float32Array(DIM).map(() => Math.random());
      for (const a of [...strangers, insider]) {
        for (const req of [f.req, f.req + 1, f.req + 2]) {
          void a.send(sw!.gw.peerId, encodeResult({ req, session: f.session, pos: f.pos, T: 1, dim: DIM, dtype: DType.F32, flags: 0, ext: [], hidden: noise })).catch(() => {});
          void a.send(sw!.gw.peerId, encodeError({ req, session: f.session, code: "INTERNAL", message: "injected" })).catch(() => {});
        }
      }
    });
    expect(ids).toEqual(WANT);
    expect(sw.gw.pipe.stats.strayFrames).toBeGreaterThan(100);
  });

  it("a stranger cannot step, drop or overwrite another gateway's session, and session ids are 128 random bits", async () => {
    sw = await memSwarm(STORIES_GGUF, [r(0, 2), r(2, 5)]);
    const seen = watchFirstStage(sw);
    const a = await Attacker.create(sw.net);
    let tried = false;
    const errors: string[] = [];
    const ids = await sw.complete([1], 60, (n) => {
      if (n !== 20 || tried) return;
      tried = true;
      const victim = seen[0].session;
      void (async () => {
        // drop it
        await a.ask(sw!.nodes[0].peerId, { type: "drop", session: victim }).catch((e) => errors.push(`${(e as LayerswarmError).code}`));
        // overwrite its cache at position 0: without a grant, then with a grant of our own for the same id
        await a.send(sw!.nodes[0].peerId, encodeStep(step(victim, { req: 9 })));
        await a.send(sw!.nodes[0].peerId, encodeStep(step(victim, { req: 10, ext: [{ kind: Ext.ROUTE_GRANT, data: (await a.grant(victim, [{ peer: sw!.nodes[0].peerId, start: 0, end: 2 }])).bytes }] })));
        // and as if it were the first stage, straight into the second
        await a.send(sw!.nodes[1].peerId, encodeStep(step(victim, { req: 11, hop: 1 })));
      })();
    });
    expect(ids).toEqual(WANT);
    expect(errors).toEqual(["UNKNOWN_SESSION"]);
    expect(sw.nodes[0].stats.refused + sw.nodes[1].stats.refused).toBeGreaterThanOrEqual(3);
    const sids = new Set(seen.map((f) => f.session));
    for (const s of sids) expect(s).toMatch(/^[0-9a-f]{32}$/);
    expect((await sw.complete([1], 5)).length).toBe(6);
    expect(new Set(seen.map((f) => f.session)).size).toBe(2); // a new session, a new random id
  });

  it("free forward passes: a stranger without a grant gets none; with --allow on the node, a foreign gateway's grant gets none", async () => {
    sw = await memSwarm(STORIES_GGUF, [r(0, 5)]);
    const a = await Attacker.create(sw.net);
    const node = sw.nodes[0];
    const before = node.stats.batches;
    for (let i = 0; i < 20; i++) await a.send(node.peerId, encodeStep(step(sid(), { req: i + 1 })));
    await settle();
    expect(node.stats.batches).toBe(before);
    // a node serving only our gateway
    const { node: closed } = await sw.addNode([r(0, 5)], { gate: new PeerGate({ allow: new Set([sw.gw.peerId]) }) });
    const s = sid();
    await a.send(closed.peerId, encodeStep(step(s, { ext: [{ kind: Ext.ROUTE_GRANT, data: (await a.grant(s, [{ peer: closed.peerId, start: 0, end: 5 }])).bytes }] })));
    await settle();
    expect(closed.stats.batches).toBe(0);
    expect(closed.stats.refused).toBe(1);
    expect(await sw.complete([1], 60)).toEqual(WANT);
  });

  it("a hundred identities on one address opening sessions until the node is full: other users are still served", async () => {
    sw = await memSwarm(STORIES_GGUF, [], {}, { maxSessions: 16 });
    await sw.addNode([r(0, 5)]);
    await sw.gw.waitForCoverage(2000);
    const node = sw.nodes[0];
    const attackers = await Promise.all(Array.from({ length: 100 }, () => Attacker.create(sw!.net, "10.66.6.6")));
    const opened: Promise<void>[] = [];
    for (const a of attackers)
      for (let k = 0; k < 3; k++) {
        const s = sid();
        opened.push(a.grant(s, [{ peer: node.peerId, start: 0, end: 5 }]).then((g) => a.send(node.peerId, encodeStep(step(s, { ext: [{ kind: Ext.ROUTE_GRANT, data: g.bytes }] })))));
      }
    await Promise.all(opened);
    for (let i = 0; i < 500 && node.stats.opened + node.stats.refused < 300; i++) await settle(); // every frame decided
    expect(node.stats.opened + node.stats.refused, JSON.stringify(node.stats)).toBe(300);
    expect(node.sessions.size, JSON.stringify(node.stats)).toBe(16);
    for (let i = 0; i < 100 && node.slices[0].sessions.size > 16; i++) await settle(); // queued steps of evicted sessions ran? they must not
    expect(node.slices[0].sessions.size).toBeLessThanOrEqual(16); // no cache outlives its session
    expect(await sw.complete([1], 60)).toEqual(WANT);
    // two users at once, while the attackers keep opening
    const again = attackers.slice(0, 50).map(async (a) => {
      const s = sid();
      await a.send(node.peerId, encodeStep(step(s, { ext: [{ kind: Ext.ROUTE_GRANT, data: (await a.grant(s, [{ peer: node.peerId, start: 0, end: 5 }])).bytes }] })));
    });
    const users = await Promise.all([sw.complete([1], 60), sw.complete([1], 60), ...again]);
    expect(users[0]).toEqual(WANT);
    expect(users[1]).toEqual(WANT);
    expect(node.sessions.size).toBeLessThanOrEqual(16);
  });

  it("a record that breaks the rules cannot crash the gateway; a node that lies in its info is banned", async () => {
    sw = await memSwarm(STORIES_GGUF, [r(0, 2), r(2, 5)]);
    const mon = new SwarmMonitor(sw.gw.view);
    const good = sw.nodes[0].record();
    const attackers = await Promise.all(Array.from({ length: 6 }, (_, i) => Attacker.create(sw!.net, `10.66.2.${i}`)));
    const bad = (me: string): unknown[] => [
      { ...good, peer: me, capacity: undefined }, // no capacity (crashed the monitor's timer before)
      { ...good, peer: me, ranges: [{ start: 0, end: 1e10 }] }, // grew the coverage array until V8 aborted
      { ...good, peer: me, ranges: [{ start: 3, end: 2 }] },
      { ...good }, // someone else's record
      { ...good, peer: me, name: "x".repeat(10_000) },
      { ...good, peer: me, model: { ...good.model, layers: 7 } },
    ];
    const codes: string[] = [];
    for (const [i, a] of attackers.entries()) {
      const rec = bad(a.peer)[i];
      const ch = await a.t.dial(sw.gw.peerId, [], PROTOCOLS.control[0], { maxMessageBytes: MAX_CONTROL_BYTES });
      await ch.send(Buffer.from(JSON.stringify({ type: "announce", record: rec })));
      for await (const m of ch.messages()) codes.push(JSON.parse(Buffer.from(m).toString()).code);
      // and the sender is banned: it cannot connect again
      await expect(a.t.dial(sw.gw.peerId, [], PROTOCOLS.control[0], { maxMessageBytes: MAX_CONTROL_BYTES })).rejects.toThrow(/refused/);
      expect(sw.gw.dir.gate.banned(a.peer)).toBeDefined();
    }
    expect(codes).toEqual(Array(6).fill("BAD_MESSAGE"));
    expect(sw.gw.dir.nodes.size).toBe(2);
    expect(() => mon.snapshot()).not.toThrow();
    // a node that answers info polls with another node's identity
    const { node: liar } = await sw.addNode([r(0, 5)]);
    liar.record = () => ({ ...good });
    await sw.gw.refresh(liar.peerId);
    expect(sw.gw.dir.get(liar.peerId)?.state).toBe("lost");
    expect(sw.gw.dir.gate.banned(liar.peerId)).toBeDefined();
    expect(await sw.complete([1], 60)).toEqual(WANT);
    expect(() => mon.snapshot()).not.toThrow();
    mon.close();
  });

  it("routes that loop, are too long or name someone else are refused; nothing keeps bouncing after the attacker leaves", async () => {
    sw = await memSwarm(STORIES_GGUF, [r(0, 5), r(0, 5)]);
    const [n0, n1] = sw.nodes;
    const a = await Attacker.create(sw.net);
    const s1 = sid(), s2 = sid(), s3 = sid();
    const long = Array.from({ length: 65 }, (_, i) => ({ peer: i % 2 ? n1.peerId : n0.peerId, start: 0, end: 1 }));
    // 65 hops: over the limit (and not contiguous); the old one-byte hop index wrapped at 257
    const gLong = (await a.grant(s1, long)).bytes; // signing checks nothing: nodes decide
    await a.send(n0.peerId, encodeStep(step(s1, { ext: [{ kind: Ext.ROUTE_GRANT, data: gLong }] }))).catch(() => {});
    await settle();
    expect(sw.nodes[0].gate.banned(a.peer)).toBeDefined(); // a malformed grant is a protocol violation
    const b = await Attacker.create(sw.net, "10.66.0.9");
    // a grant whose hop 0 is the other node, sent to this one
    const g2 = await b.grant(s2, [{ peer: n1.peerId, start: 0, end: 5 }]);
    await b.send(n0.peerId, encodeStep(step(s2, { ext: [{ kind: Ext.ROUTE_GRANT, data: g2.bytes }] })));
    // a valid two-hop grant, but hop 1 sent by us instead of by hop 0
    const g3 = await b.grant(s3, [{ peer: n0.peerId, start: 0, end: 2 }, { peer: n1.peerId, start: 2, end: 5 }]);
    await b.send(n1.peerId, encodeStep(step(s3, { hop: 1, ext: [{ kind: Ext.ROUTE_GRANT, data: g3.bytes }] })));
    await settle();
    expect(n0.stats.batches + n1.stats.batches).toBe(0);
    await b.t.stop();
    const frames = n0.stats.frames + n1.stats.frames;
    await new Promise((res) => setTimeout(res, 200));
    expect(n0.stats.frames + n1.stats.frames).toBe(frames);
    expect(await sw.complete([1], 60)).toEqual(WANT);
  });

  it("oversize frames, too many streams, floods of rows and old protocol versions: bounded, and everyone else is served", async () => {
    sw = await memSwarm(STORIES_GGUF, [r(0, 5)], {}, { maxBatchRows: 32 });
    const node = sw.nodes[0];
    // a frame over the size derived from the model is refused before it is buffered
    const big = await Attacker.create(sw.net, "10.66.1.1");
    await expect(big.send(node.peerId, new Uint8Array(maxFrameBytes(node.limits) + 1))).rejects.toThrow(/exceeds the limit/);
    // streams per connection are capped
    const many = await Attacker.create(sw.net, "10.66.1.2");
    const opened = await Promise.allSettled(Array.from({ length: 10 }, () => many.t.dial(node.peerId, [], PROTOCOLS.steps[0], { maxMessageBytes: 1024 })));
    expect(opened.filter((o) => o.status === "fulfilled").length).toBe(4);
    // a flood of valid rows from ten identities: the node reads no faster than it computes
    const flooders = await Promise.all(Array.from({ length: 10 }, () => Attacker.create(sw!.net, "10.66.1.3")));
    let peakQueued = 0;
    const watch = setInterval(() => (peakQueued = Math.max(peakQueued, (node as unknown as { queuedRows: { total: number } }).queuedRows.total)), 1);
    const flood = flooders.map(async (a) => {
      const s = sid();
      const g = await a.grant(s, [{ peer: node.peerId, start: 0, end: 5 }]);
      for (let p = 0; p < 8; p++) await a.send(node.peerId, encodeStep(step(s, { pos: p * 32, T: 32, hidden: new Float32Array(32 * DIM).fill(0.1), ext: p === 0 ? [{ kind: Ext.ROUTE_GRANT, data: g.bytes }] : [] })));
    });
    const user = sw.complete([1], 60);
    await Promise.all(flood);
    expect(await user).toEqual(WANT);
    clearInterval(watch);
    expect(peakQueued).toBeLessThanOrEqual(32 * 32 + 32);
    // version 1 frames are refused with a clear error, and the sender is banned
    const old = await Attacker.create(sw.net, "10.66.1.4");
    const v1 = Buffer.from(encodeStep(step(sid())));
    v1[1] = 1;
    await old.send(node.peerId, v1);
    await settle();
    expect(node.gate.banned(old.peer)).toMatch(/protocol version 1/);
    await expect(old.send(node.peerId, encodeStep(step(sid())))).rejects.toThrow();
    expect(await sw.complete([1], 60)).toEqual(WANT);
  });
});

describe("hostile peers, second round (found by review)", () => {
  it("a stranger keeping a node busy with full-size steps gets its share of batches, not everyone's", async () => {
    sw = await memSwarm(STORIES_GGUF, [r(0, 5)], {}, { maxBatchRows: 32 });
    const node = sw.nodes[0];
    const a = await Attacker.create(sw.net);
    let stop = false;
    const s = sid();
    const g = await a.grant(s, [{ peer: node.peerId, start: 0, end: 5 }]);
    const hog = (async () => {
      // always 32 rows at position 0 (rewriting its own history), as fast as the node reads them
      for (let i = 0; !stop && i < 2000; i++)
        await a.send(node.peerId, encodeStep(step(s, { req: i + 1, T: 32, hidden: new Float32Array(32 * DIM).fill(0.1), ext: i === 0 ? [{ kind: Ext.ROUTE_GRANT, data: g.bytes }] : [] })));
    })();
    try {
      expect(await sw.complete([1], 60)).toEqual(WANT);
    } finally {
      stop = true;
      await hog.catch(() => {});
    }
    expect(node.stats.batches).toBeGreaterThan(60);
  });

  it("KV memory filled by strangers' long sessions: a user's session takes room from the biggest holder", async () => {
    // 1280 bytes of cache per position on stories260K: 2 MiB hold about three 512-position sessions
    sw = await memSwarm(STORIES_GGUF, [], {}, { kvBudgetBytes: 2 * 2 ** 20 });
    await sw.addNode([r(0, 5)], { kvBudgetBytes: 2 * 2 ** 20 });
    await sw.gw.waitForCoverage(2000);
    const node = sw.nodes[0];
    const attackers = await Promise.all(Array.from({ length: 6 }, (_, i) => Attacker.create(sw!.net, `10.66.3.${i}`)));
    for (const a of attackers) {
      const s = sid();
      const g = await a.grant(s, [{ peer: node.peerId, start: 0, end: 5 }]);
      await a.send(node.peerId, encodeStep(step(s, { T: 500, hidden: new Float32Array(500 * DIM).fill(0.1), ext: [{ kind: Ext.ROUTE_GRANT, data: g.bytes }] })));
    }
    for (let i = 0; i < 200 && node.stats.opened + node.stats.refused < 6; i++) await settle();
    await settle();
    expect(node.stats.opened).toBeGreaterThan(0);
    expect(await sw.complete([1], 60)).toEqual(WANT);
    expect(node.stats.evicted).toBeGreaterThan(0);
  });

  it("a node that takes steps and never answers is routed around, and stays avoided", async () => {
    sw = await memSwarm(STORIES_GGUF, [r(0, 2), r(2, 5)], { stepTimeoutMs: 400 });
    // a stranger's node claims every layer (routes prefer it) and sits on what it gets
    const { node: hole } = await sw.addNode([r(0, 5)]);
    (hole as unknown as { emit: () => void }).emit = () => {};
    expect(sw.gw.router.plan()!.map((st) => st.id)).toEqual([hole.peerId]);
    expect(await sw.complete([1], 60)).toEqual(WANT);
    expect(await sw.complete([1], 60)).toEqual(WANT);
    expect(sw.gw.router.plan()!.map((st) => st.id)).not.toContain(hole.peerId);
  });

  it("a stage that fails one chunk of a long prompt while others are in flight: every chunk is recovered, none hangs", async () => {
    const prompt = goldenIds("1").slice(0, 200);
    const local = await memSwarm(STORIES_GGUF, [r(0, 5)]);
    const want = await local.complete(prompt, 20);
    await local.stop();
    // a first stage whose KV memory holds about 100 positions (1280 bytes each here: 256 per layer pair)
    sw = await memSwarm(STORIES_GGUF, [], {}, {});
    await sw.addNode([r(0, 2)], { kvBudgetBytes: 40_000 });
    await sw.addNode([r(2, 5)]);
    await sw.gw.waitForCoverage(2000);
    await sw.addNode([r(0, 2)]);
    expect(await sw.complete(prompt, 20)).toEqual(want);
  });

  it("a gateway that never reads its results: the node stops computing for it, at a bounded backlog, and serves the others", async () => {
    sw = await memSwarm(STORIES_GGUF, [r(0, 5)], {}, { maxUnsentBytes: 64 * 1024 });
    const node = sw.nodes[0];
    const a = await Attacker.create(sw.net);
    await a.t.handle(PROTOCOLS.steps, () => {}, { maxMessageBytes: 1 << 20, maxStreamsPerConnection: 4 }); // accepts, never reads
    const s = sid();
    const g = await a.grant(s, [{ peer: node.peerId, start: 0, end: 5 }]);
    let sent = 0;
    const flood = (async () => {
      for (let i = 0; i < 400; i++) {
        // at growing positions, as a session's steps are (a node refuses an earlier position again)
        await a.send(node.peerId, encodeStep(step(s, { req: i + 1, pos: 8 * i, T: 8, hidden: new Float32Array(8 * DIM).fill(0.1), ext: i === 0 ? [{ kind: Ext.ROUTE_GRANT, data: g.bytes }] : [] })));
        sent++;
      }
    })();
    expect(await sw.complete([1], 60)).toEqual(WANT);
    await settle();
    const outbox = (node as unknown as { outbox: { unsentBytes(p: string): number } }).outbox;
    expect(outbox.unsentBytes(a.peer)).toBeLessThanOrEqual(64 * 1024 + 8 * DIM * 4 + 1024);
    expect(sent).toBeLessThan(400); // held back: the node stopped reading its steps
    void flood.catch(() => {});
  });

  it("a stranger evicting a user's session at a later stage: the gateway hears at once, no step waits for its timeout", async () => {
    sw = await memSwarm(STORIES_GGUF, [r(0, 2), r(2, 4), r(4, 5)], { stepTimeoutMs: 60_000 }, { maxSessions: 2 });
    const mid = sw.nodes[1];
    const a = await Attacker.create(sw.net, "10.66.4.1");
    let done = false;
    const users = [sw.complete([1], 60, (n) => {
      if (n !== 20 || done) return;
      done = true;
      // the stranger opens sessions on the middle node (its own grants, as its own first stage) until it evicts
      void (async () => {
        for (let i = 0; i < 4; i++) {
          const s = sid();
          const g = await a.grant(s, [{ peer: mid.peerId, start: 2, end: 4 }]);
          await a.send(mid.peerId, encodeStep(step(s, { ext: [{ kind: Ext.ROUTE_GRANT, data: g.bytes }] })));
        }
      })();
    }), sw.complete([1], 60)];
    const out = await Promise.all(users);
    expect(out[0]).toEqual(WANT);
    expect(out[1]).toEqual(WANT);
    expect(mid.stats.evicted).toBeGreaterThan(0);
    expect(sw.gw.pipe.stats.timeouts).toBe(0);
  });
});

// A frame whose packed values are well laid out (each plane 1/8 of its bytes)
// but do not inflate: whoever unpacks it finds a BAD_MESSAGE and bans the sender.
function junkPacked(plain: Uint8Array): Uint8Array {
  const n = DIM, junk = new Uint8Array(n / 8).fill(0xff); // deflate block type 3: invalid
  const head = Uint8Array.of(1, junk.length, 0, 0, 0);
  const f = Buffer.concat([plain.subarray(0, plain.length - 4 * n), Uint8Array.of(4), ...Array.from({ length: 4 }, () => [head, junk]).flat()]);
  f[3] |= FLAG_PACKED;
  return f;
}

describe("hostile peers, third round (found by review)", () => {
  it("packed values are unpacked only after the sender is authorized: a stranger's steps and results cost their headers", async () => {
    sw = await memSwarm(STORIES_GGUF, [r(0, 5)]);
    const node = sw.nodes[0];
    const a = await Attacker.create(sw.net, "10.66.7.1");
    // no session here, and a stray result at the gateway: refused on the header, the values never read
    await a.send(node.peerId, junkPacked(encodeStep(step(sid()))));
    await a.send(sw.gw.peerId, junkPacked(encodeResult(step(sid()))));
    await settle();
    expect(node.stats.refused).toBe(1);
    expect(node.gate.banned(a.peer)).toBeUndefined();
    expect(sw.gw.pipe.stats.strayFrames).toBe(1);
    expect(sw.gw.dir.gate.banned(a.peer)).toBeUndefined();
    // authorized (its own grant, as its own gateway): now the values are read, and they are garbage
    const s = sid();
    const g = await a.grant(s, [{ peer: node.peerId, start: 0, end: 5 }]);
    await a.send(node.peerId, junkPacked(encodeStep(step(s, { ext: [{ kind: Ext.ROUTE_GRANT, data: g.bytes }] })))).catch(() => {});
    for (let i = 0; i < 50 && !node.gate.banned(a.peer); i++) await settle();
    expect(node.gate.banned(a.peer)).toMatch(/plane 0 does not inflate/);
    expect(node.sessions.get(s)).toBeUndefined(); // nothing of it was opened
    expect(await sw.complete([1], 60)).toEqual(WANT);
  });

  it("steps for unknown sessions: a budget per peer (late steps after a drop are honest), strikes only beyond it", async () => {
    sw = await memSwarm(STORIES_GGUF, [], {}, { unknownSessionBurst: 8, unknownSessionPerSec: 0, strikesBeforeBan: 3 });
    await sw.addNode([r(0, 5)]);
    const node = sw.nodes[0];
    const a = await Attacker.create(sw.net, "10.66.7.2");
    for (let i = 0; i < 8; i++) await a.send(node.peerId, encodeStep(step(sid(), { req: i + 1 })));
    await settle();
    expect(node.stats.refused).toBe(8);
    expect(node.gate.banned(a.peer)).toBeUndefined(); // within the budget: answered, no strike
    for (let i = 0; i < 3; i++) await a.send(node.peerId, encodeStep(step(sid(), { req: 100 + i }))).catch(() => {});
    for (let i = 0; i < 50 && !node.gate.banned(a.peer); i++) await settle();
    expect(node.gate.banned(a.peer)).toMatch(/unknown sessions faster than its budget/);
    expect(await sw.complete([1], 60)).toEqual(WANT); // the gateway's own steps are not counted against it
  });

  it("the manifest (tens of KB for a 100-byte ask): encoded once, a few per peer and per address, the allow-list's peers only", async () => {
    sw = await memSwarm(STORIES_GGUF, [r(0, 5)]);
    const node = sw.nodes[0];
    const stringify = vi.spyOn(JSON, "stringify");
    const bigOnes = () => stringify.mock.calls.filter(([v]) => (v as { manifest?: unknown })?.manifest !== undefined).length;
    try {
      const a = await Attacker.create(sw.net, "10.66.8.1");
      const asks = await Promise.all(Array.from({ length: 10 }, () => a.ask(node.peerId, { type: "manifest" }).then((x) => x.type, (e) => (e as LayerswarmError).code)));
      expect(asks.filter((x) => x === "manifest")).toHaveLength(2); // its burst
      expect(asks.filter((x) => x === "BUSY")).toHaveLength(8);
      expect(bigOnes()).toBe(1); // one encoding for every answer
    } finally {
      stringify.mockRestore();
    }
    // one address, many identities: the address's budget, then BUSY for all of them; another address is still answered
    const crowd = await Promise.all(Array.from({ length: 20 }, () => Attacker.create(sw!.net, "10.66.8.2")));
    const t0 = performance.now();
    const got = await Promise.all(crowd.flatMap((c) => [0, 1].map(() => c.ask(node.peerId, { type: "manifest" }).then((x) => x.type, (e) => (e as LayerswarmError).code))));
    const refilled = Math.ceil((performance.now() - t0) / 1000); // one a second
    expect(got.filter((x) => x === "manifest").length).toBeLessThanOrEqual(32 + refilled); // 32 at once, and what refilled meanwhile
    expect(got.filter((x) => x === "BUSY").length).toBeGreaterThan(0);
    const other = await Attacker.create(sw.net, "10.66.8.3");
    expect((await other.ask(node.peerId, { type: "manifest" })).type).toBe("manifest");
    // a node serving only its gateways answers nobody else
    const friend = await Attacker.create(sw.net, "10.66.8.4");
    const { node: closed } = await sw.addNode([r(0, 5)], { gate: new PeerGate({ allow: new Set([sw.gw.peerId, friend.peer]) }) });
    await expect(other.ask(closed.peerId, { type: "manifest" })).rejects.toMatchObject({ code: "FORBIDDEN" });
    expect((await friend.ask(closed.peerId, { type: "manifest" })).type).toBe("manifest");
  });
});
