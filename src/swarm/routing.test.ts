// Route choice by measurement and moving nodes, over the in-memory transport:
// routes follow the speed the gateway measured itself (a node whose record
// claims it is fastest does not win on its word), and a node that moves its
// layers while sessions run fails none of them and changes no token.

import { afterEach, describe, expect, it } from "vitest";
import { STORIES_GGUF, goldenIds } from "../testing/shared.js";
import { MemSwarm, memSwarm } from "../testing/memswarm.js";
import { SwarmNode } from "./node/index.js";
import { Transport } from "./transport.js";

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

describe("moving a node's layers (rebalancing)", () => {
  // a node serving layers [2, 5) on the route of a session running now
  const carrier = (s: MemSwarm): SwarmNode => {
    const ids = new Set([...s.gw.sessions.all.values()].flatMap((x) => x.route.filter((st) => st.end === 5).map((st) => st.id)));
    return s.nodes.find((n) => ids.has(n.peerId))!;
  };

  it("live sessions handed to a replica by exact replay: none fails, no token changes; then the node serves its new layers", async () => {
    sw = await memSwarm(STORIES_GGUF, [r(0, 2), r(2, 5), r(2, 5)]);
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
