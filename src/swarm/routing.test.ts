// Route choice by measurement and moving nodes, over the in-memory transport:
// routes follow the speed the gateway measured itself (a node whose record
// claims it is fastest does not win on its word), and a node that moves its
// layers while sessions run fails none of them and changes no token.

import { afterEach, describe, expect, it } from "vitest";
import { STORIES_GGUF, goldenIds } from "../testing/shared.js";
import { MemSwarm, memSwarm } from "../testing/memswarm.js";
import { SwarmNode } from "./node/index.js";
import { Transport } from "./transport.js";
import { MemoryTransport } from "./memory.js";
import { PeerGate } from "./policy.js";
import { missingLayers } from "./placement.js";
import { request } from "./rpc.js";
import { PROBE_OWNER } from "./gateway/probe.js";
import { PROTOCOLS } from "./protocol/index.js";
import { LayerswarmError } from "../errors.js";

const r = (start: number, end: number) => ({ start, end });
const WANT = goldenIds("4").slice(0, 61); // [1] and 60 greedy tokens

// What a node sends arrives link.ms later (the delay can change between tests' phases, while idle).
function slowLink(t: Transport, link: { ms: number }): Transport {
  const bind = <T extends object>(o: T, p: string | symbol) => {
    const v = Reflect.get(o, p);
    return typeof v === "function" ? v.bind(o) : v;
  };
  return new Proxy(t, {
    get(target, p) {
      if (p !== "dial") return bind(target, p);
      return async (...a: Parameters<Transport["dial"]>) => {
        const ch = await target.dial(...a);
        return new Proxy(ch, {
          get(c, q) {
            if (q !== "send") return bind(c, q);
            return (msg: Uint8Array) => {
              if (link.ms <= 0) return c.send(msg);
              setTimeout(() => void c.send(msg).catch(() => {}), link.ms);
              return Promise.resolve();
            };
          },
        });
      };
    },
  });
}

let sw: MemSwarm | undefined;
afterEach(async () => {
  await sw?.stop();
  sw = undefined;
});

const probed = async (s: MemSwarm, peers: string[]) => {
  for (let i = 0; i < 500 && peers.some((p) => !s.gw.dir.get(p)?.probe); i++) await new Promise((res) => setTimeout(res, 10));
  for (const p of peers) expect(s.gw.dir.get(p)?.probe, `probe of ${p.slice(-6)}`).toBeDefined();
};

describe("route choice by the gateway's own measurements", () => {
  it("routes follow measured speed; a node whose record claims it is fastest does not win on its word", async () => {
    sw = await memSwarm(STORIES_GGUF, [], { probeMs: 60_000 });
    const honestLink = { ms: 0 }, liarLink = { ms: 25 };
    const { node: honest } = await sw.addNode([r(0, 5)], {}, undefined, (t) => slowLink(t, honestLink));
    const { node: liar } = await sw.addNode([r(0, 5)], {}, undefined, (t) => slowLink(t, liarLink));
    // the liar's record says it is a thousand times faster than anyone, with no sessions and instant links
    const rec = liar.record.bind(liar);
    liar.record = () => {
      const x = rec();
      return { ...x, capacity: { ...x.capacity, layersPerSec: 1e9, sessions: 0 }, links: [] };
    };
    await sw.gw.refresh(liar.peerId);
    expect(sw.gw.dir.get(liar.peerId)!.record.capacity.layersPerSec).toBe(1e9);
    await probed(sw, [honest.peerId, liar.peerId]);
    const ms = (n: SwarmNode) => sw!.gw.dir.get(n.peerId)!.probe!.ms1;
    console.log(`probe, one row: honest ${ms(honest).toFixed(2)} ms, liar (25 ms link) ${ms(liar).toFixed(2)} ms`);
    const figs = JSON.stringify([honest, liar].map((n) => ({ probe: sw!.gw.dir.get(n.peerId)!.probe, rtt: sw!.gw.dir.get(n.peerId)!.rttMs, sessions: sw!.gw.dir.get(n.peerId)!.sessions })));
    expect(sw.gw.router.plan()!.map((s) => s.id), figs).toEqual([honest.peerId]);
    // three sessions at once: all through the honest node (load alone does not outweigh 25 ms)
    const outs = await Promise.all([0, 1, 2].map(() => sw!.complete([1], 60)));
    for (const o of outs) expect(o).toEqual(WANT);
    expect(sw.gw.dir.get(honest.peerId)!.routed).toBe(true);
    expect(sw.gw.dir.get(liar.peerId)!.routed).toBe(false);

    // the links change: measured again, new sessions follow
    honestLink.ms = 25;
    liarLink.ms = 0;
    await Promise.all([sw.gw.prober.probe(honest.peerId), sw.gw.prober.probe(liar.peerId)]);
    await Promise.all([sw.gw.prober.probe(honest.peerId), sw.gw.prober.probe(liar.peerId)]); // smoothed: twice
    expect(sw.gw.router.plan()!.map((s) => s.id)).toEqual([liar.peerId]);
    expect(await sw.complete([1], 60)).toEqual(WANT);
    expect(sw.gw.dir.get(liar.peerId)!.routed).toBe(true);
  });

  it("a chain of fast nodes beats one node on a slow link, and the other way round once the chain is slow", async () => {
    sw = await memSwarm(STORIES_GGUF, [], { probeMs: 60_000 });
    const wholeLink = { ms: 20 }, chainLink = { ms: 0 };
    const { node: whole } = await sw.addNode([r(0, 5)], {}, undefined, (t) => slowLink(t, wholeLink));
    const { node: a } = await sw.addNode([r(0, 2)], {}, undefined, (t) => slowLink(t, chainLink));
    const { node: b } = await sw.addNode([r(2, 5)], {}, undefined, (t) => slowLink(t, chainLink));
    await probed(sw, [whole.peerId, a.peerId, b.peerId]);
    expect(sw.gw.router.plan()!.map((s) => s.id)).toEqual([a.peerId, b.peerId]);
    expect(await sw.complete([1], 60)).toEqual(WANT);
    wholeLink.ms = 0;
    chainLink.ms = 20;
    for (let i = 0; i < 2; i++) await Promise.all([whole, a, b].map((n) => sw!.gw.prober.probe(n.peerId)));
    expect(sw.gw.router.plan()!.map((s) => s.id)).toEqual([whole.peerId]);
    expect(await sw.complete([1], 60)).toEqual(WANT);
  });
});

// What a node sends on its steps streams, changed by f (a node computing wrong bits, for instance).
function alterResults(t: Transport, f: (msg: Uint8Array) => Uint8Array): Transport {
  const bind = <T extends object>(o: T, p: string | symbol) => {
    const v = Reflect.get(o, p);
    return typeof v === "function" ? v.bind(o) : v;
  };
  return new Proxy(t, {
    get(target, p) {
      if (p !== "dial") return bind(target, p);
      return async (...a: Parameters<Transport["dial"]>) => {
        const ch = await target.dial(...a);
        if (!(PROTOCOLS.steps as readonly string[]).includes(a[2])) return ch;
        return new Proxy(ch, { get: (c, q) => (q === "send" ? (msg: Uint8Array) => c.send(f(msg)) : bind(c, q)) });
      };
    },
  });
}

// security review: probes were easy to tell from sessions (inputs all 0.01, fixed rows), their
// outputs never checked, real step times never used, and a stalled or slow-to-open probe held a
// slot for the whole step timeout or had the node counted as lost
describe("probes that cannot be gamed", () => {
  it("inputs are the gateway's embeddings of random tokens, with random row counts", async () => {
    sw = await memSwarm(STORIES_GGUF, [], { probeMs: 60_000 });
    const { node } = await sw.addNode([r(0, 5)]);
    await probed(sw, [node.peerId]);
    const seen: { T: number; hidden: Float32Array }[] = [];
    const send = sw.gw.pipe.send.bind(sw.gw.pipe);
    sw.gw.pipe.send = (ws, route, st, signal) => {
      if (ws.owner === PROBE_OWNER) seen.push({ T: st.T, hidden: st.hidden });
      return send(ws, route, st, signal);
    };
    for (let i = 0; i < 6; i++) await sw.gw.prober.probe(node.peerId);
    const dim = sw.model.cfg.dim;
    // every row is some token's embedding (the gateway's own table), not a constant
    const table = new Map<string, number>();
    const rowKey = (h: Float32Array, i: number) => Buffer.from(h.buffer, h.byteOffset + i * dim * 4, dim * 4).toString("base64");
    const emb = sw.model.embedder.embed(Array.from({ length: sw.model.cfg.vocabSize }, (_, i) => i));
    for (let i = 0; i < sw.model.cfg.vocabSize; i++) table.set(rowKey(emb, i), i);
    for (const x of seen) for (let i = 0; i < x.T; i++) expect(table.has(rowKey(x.hidden, i)), `probe row ${i} of ${x.T}`).toBe(true);
    const multi = seen.filter((x) => x.T > 1).map((x) => x.T);
    expect(new Set(multi).size, `row counts ${multi}`).toBeGreaterThan(1);
  });

  it("a holder whose probe output differs from the others' on the same input is noted (not banned)", async () => {
    sw = await memSwarm(STORIES_GGUF, [], { probeMs: 60_000 }, { wirePack: "never" });
    const { node: a } = await sw.addNode([r(0, 5)]);
    const { node: b } = await sw.addNode([r(0, 5)]);
    // c flips one bit of the last value of every result it sends
    const { node: c } = await sw.addNode([r(0, 5)], {}, undefined, (t) => alterResults(t, (m) => {
      const x = m.slice();
      x[x.length - 4] ^= 1;
      return x;
    }));
    await probed(sw, [a.peerId, b.peerId, c.peerId]);
    for (const n of [a, b, c]) await sw.gw.prober.probe(n.peerId); // the same round: the same opening tokens
    expect(sw.gw.dir.get(c.peerId)!.mismatch).toMatchObject({ start: 0, end: 5 });
    expect(new Set(sw.gw.dir.get(c.peerId)!.mismatch!.with)).toEqual(new Set([a.peerId, b.peerId]));
    expect(sw.gw.dir.get(a.peerId)!.mismatch).toBeUndefined();
    expect(sw.gw.dir.get(b.peerId)!.mismatch).toBeUndefined();
    expect(sw.gw.view.nodes().find((n) => n.peer === c.peerId)!.mismatch).toMatchObject({ start: 0, end: 5 });
    expect(sw.gw.dir.get(c.peerId)!.state).toBe("serving");
  });

  it("a node fast on probes and slow on real steps is priced by its real steps", async () => {
    sw = await memSwarm(STORIES_GGUF, [], { probeMs: 60_000 });
    const honestLink = { ms: 5 }, gamerLink = { ms: 0 };
    const { node: honest } = await sw.addNode([r(0, 5)], {}, undefined, (t) => slowLink(t, honestLink));
    const { node: gamer } = await sw.addNode([r(0, 5)], {}, undefined, (t) => slowLink(t, gamerLink));
    await probed(sw, [honest.peerId, gamer.peerId]);
    expect(sw.gw.router.plan()!.map((s) => s.id)).toEqual([gamer.peerId]);
    gamerLink.ms = 40; // it told probes apart and serves real sessions slowly
    expect(await sw.complete([1], 10)).toEqual(WANT.slice(0, 11));
    expect(sw.gw.router.plan()!.map((s) => s.id), JSON.stringify(sw.gw.dir.get(gamer.peerId)!.real)).toEqual([honest.peerId]);
  });

  it("a probe that stalls ends at its own deadline, priced that slow; a probe whose stream cannot open does not lose the node", async () => {
    sw = await memSwarm(STORIES_GGUF, [], { probeMs: 60_000, probeTimeoutMs: 300, stepTimeoutMs: 5000 });
    const stall = { ms: 0 };
    const { node } = await sw.addNode([r(0, 5)], {}, undefined, (t) => slowLink(t, stall));
    await probed(sw, [node.peerId]);
    stall.ms = 60_000; // its answers never come (within the test)
    await sw.gw.prober.probe(node.peerId);
    expect(sw.gw.prober.stats.timedOut).toBe(1);
    expect(sw.gw.dir.get(node.peerId)!.probe!.ms1).toBeGreaterThanOrEqual(150); // smoothed with its first figure: (x + 300) / 2
    expect(sw.gw.dir.get(node.peerId)!.state).toBe("serving");
    // a stream slow to open (the outbox's dial timeout while the node is busy computing)
    const send = sw.gw.pipe.outbox.send.bind(sw.gw.pipe.outbox);
    sw.gw.pipe.outbox.send = (peer, addrs, msg) =>
      peer === node.peerId ? Promise.reject(new LayerswarmError("UNREACHABLE", "dial timed out after 10000 ms")) : send(peer, addrs, msg);
    await sw.gw.prober.probe(node.peerId);
    expect(sw.gw.dir.get(node.peerId)!.state).toBe("serving");
  });
});

describe("moving a node's layers (rebalancing)", () => {
  // a node serving layers [2, 5) on the route of a session running now
  const carrier = (s: MemSwarm): SwarmNode => {
    const ids = new Set([...s.gw.sessions.all.values()].flatMap((x) => x.route.filter((st) => st.end === 5).map((st) => st.id)));
    return s.nodes.find((n) => ids.has(n.peerId))!;
  };

  it("live sessions handed to a replica by exact replay: none fails, no token changes; then the node serves its new layers", async () => {
    // settleMs 0: it drains at once after asking again (else the sessions would finish first)
    sw = await memSwarm(STORIES_GGUF, [r(0, 2), r(2, 5), r(2, 5)], {}, { settleMs: 0 });
    let moved: Promise<unknown> | undefined, mover: SwarmNode | undefined;
    const outs = await Promise.all([0, 1, 2].map((i) => sw!.complete([1], 60, (n) => {
      if (i !== 0 || n !== 15 || moved) return;
      mover = carrier(sw!);
      // a short drain: the sessions still running then are handed over
      moved = mover.move(r(0, 2), { drainMs: 5 });
    })));
    for (const o of outs) expect(o).toEqual(WANT);
    expect(await moved).toEqual([r(0, 2)]);
    expect(sw.gw.stats.recoveries).toBeGreaterThanOrEqual(1); // handed over, by replay
    expect(mover!.stats.evicted).toBeGreaterThanOrEqual(1);
    await sw.gw.refresh(mover!.peerId);
    expect(sw.gw.dir.get(mover!.peerId)!.record.ranges).toEqual([r(0, 2)]);
    expect(sw.gw.dir.get(mover!.peerId)!.record.draining).toBeUndefined();
    expect(await sw.complete([1], 60)).toEqual(WANT);
  });

  it("with time to drain, live sessions finish where they are; new sessions go elsewhere at once; a move that would leave a hole is refused", async () => {
    sw = await memSwarm(STORIES_GGUF, [r(0, 2), r(2, 5), r(2, 5)]);
    await expect(sw.nodes[0].move(r(2, 5))).rejects.toThrow(/would leave layers \[0, 2\) held by nobody else/);
    let moved: Promise<unknown> | undefined, mover: SwarmNode | undefined, late: Promise<number[]> | undefined;
    const first = sw.complete([1], 60, (n) => {
      if (n !== 15 || moved) return;
      mover = carrier(sw!);
      moved = mover.move(r(0, 2), { drainMs: 60_000 });
      // a session opened once the gateway knows of the move goes through the other replica
      late = (async () => {
        while (!sw!.gw.dir.get(mover!.peerId)!.record.draining) await new Promise((res) => setTimeout(res, 1));
        return sw!.complete([1], 60);
      })();
    });
    expect(await first).toEqual(WANT);
    expect(await moved).toEqual([r(0, 2)]);
    expect(await late).toEqual(WANT);
    expect(sw.gw.stats.recoveries).toBe(0); // nobody was handed over, nobody refused
    expect(mover!.stats.evicted).toBe(0);
    expect(mover!.stats.refused).toBe(0);
  });

  // security review: a record that claims layers (its hashes copied from an honest one) counted as
  // cover, so the honest holders of a range could all move away from it
  it("a move counts as cover only holders it checked itself with a real step answering the same bits", async () => {
    sw = await memSwarm(STORIES_GGUF, [r(0, 2), r(2, 5)], {}, { settleMs: 0 });
    const [a] = sw.nodes;
    const gw = { peer: sw.gw.peerId, addrs: sw.gw.addrs() };
    // a liar holding [2, 5) whose record claims [0, 5), with a's hashes for layers 0-1
    const { node: liar } = await sw.addNode([r(2, 5)]);
    const rec = liar.record.bind(liar);
    liar.record = () => {
      const x = rec();
      return { ...x, ranges: [r(0, 5)], model: { ...x.model, layerHashes: [...a.record().model.layerHashes, ...x.model.layerHashes] } };
    };
    await liar.announce(gw);
    // and a real holder of [0, 2) that answers other bits (one flipped bit of the last value)
    await sw.addNode([r(0, 2)], { wirePack: "never" }, undefined, (t) => alterResults(t, (m) => {
      const x = m.slice();
      x[x.length - 4] ^= 1;
      return x;
    }));
    await expect(a.move(r(2, 5), { drainMs: 0 })).rejects.toThrow(/would leave layers \[0, 2\) held by nobody else/);
    expect(a.ranges()).toEqual([r(0, 2)]);
    // an honest holder: checked, it is cover
    const { node: honest } = await sw.addNode([r(0, 2)]);
    expect(await a.move(r(2, 5), { drainMs: 0 })).toEqual([r(2, 5)]);
    expect(missingLayers(5, [honest, ...sw.nodes.slice(1, 2)].map((n) => ({ id: n.peerId, ranges: n.ranges() })))).toEqual([]);
  });

  it("a refused move names only the layers it gives up that nobody else holds, not the unchecked layers around them", async () => {
    sw = await memSwarm(STORIES_GGUF, [r(0, 2), r(2, 3), r(3, 5)], {}, { settleMs: 0 });
    await expect(sw.nodes[1].move(r(0, 1), { drainMs: 0 })).rejects.toThrow(/would leave layers \[2, 3\) held by nobody else/);
    expect(sw.nodes[1].ranges()).toEqual([r(2, 3)]);
  });

  // security review: holders whose timers line up all drained one range at once, leaving it empty
  it("two holders draining one range at once: each asks again once it drains, sees the other draining, and gives up; the range stays held", async () => {
    sw = await memSwarm(STORIES_GGUF, [r(0, 2), r(0, 2), r(2, 5)], {}, { settleMs: 50 });
    const [a, b] = sw.nodes;
    const got = await Promise.allSettled([a.move(r(2, 5), { drainMs: 0 }), b.move(r(2, 5), { drainMs: 0 })]);
    const refused = got.filter((g) => g.status === "rejected").map((g) => String((g as PromiseRejectedResult).reason));
    expect(refused.length, JSON.stringify(got)).toBeGreaterThanOrEqual(1);
    for (const why of refused) expect(why).toMatch(/given up: layers \[0, 2\) would be held by nobody else/);
    expect(missingLayers(5, sw.nodes.map((n) => ({ id: n.peerId, ranges: n.ranges() })))).toEqual([]);
    for (const n of [a, b]) await n.announce({ peer: sw.gw.peerId, addrs: sw.gw.addrs() });
    expect(await sw.complete([1], 60)).toEqual(WANT);
  });

  // security review: a peer's load during a move's drain took the layers' memory, and the move then failed
  it("a peer's load is refused while the node moves; the move completes", async () => {
    sw = await memSwarm(STORIES_GGUF, [r(0, 2), r(2, 5)], {}, { settleMs: 200 });
    const { node: mover } = await sw.addNode([r(2, 5)], { maxLayers: 5 });
    let done = false;
    const moved = mover.move(r(0, 2), { drainMs: 0 }).finally(() => (done = true));
    while (!done && !sw.gw.dir.get(mover.peerId)?.record.draining) await new Promise((res) => setTimeout(res, 1));
    expect(done, "the move ended before the gateway saw it drain").toBe(false);
    const t = await MemoryTransport.create(sw.net, "10.3.0.1", new PeerGate());
    await expect(request(t, mover.peerId, mover.record().addrs, { type: "load", start: 0, end: 2 }, 5000)).rejects.toThrow(/moving to other layers/);
    expect(await moved).toEqual([r(0, 2)]);
    await t.stop();
  });

  it("a node moves by itself when the swarm's bottleneck is elsewhere, and answers stay exact", async () => {
    sw = await memSwarm(STORIES_GGUF, [r(0, 2), r(2, 5)]);
    const { node: spare } = await sw.addNode([r(0, 2)], { maxLayers: 3 });
    // equal speeds (measured at start, so noisy): layers 2-4 have one holder, layers 0-1 two
    for (const n of sw.nodes) (n as unknown as { layersPerSec: number }).layersPerSec = 1000;
    await Promise.all(sw.nodes.map((n) => n.announce({ peer: sw!.gw.peerId, addrs: sw!.gw.addrs() })));
    expect(await sw.nodes[1].rebalance()).toBeUndefined(); // the only holder of 2-4 stays
    expect(await spare.rebalance()).toEqual([r(2, 5)]);
    expect(await spare.rebalance()).toBeUndefined(); // balanced now: it stays
    expect(await sw.complete([1], 60)).toEqual(WANT);
  });
});
