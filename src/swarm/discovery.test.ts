// Discovery without a coordinator. First the Discovery compliance suite, run
// on the in-memory DHT and on the real Kad-DHT (libp2p, in this process);
// then swarms in memory whose nodes announce themselves only in the DHT:
// several gateways sharing them, a gateway killed, a node that vanishes
// silently and expires, forged and foreign records, a late node and
// --layers auto found through the DHT.

import { afterEach, describe, expect, it } from "vitest";
import { STORIES_GGUF, goldenIds } from "../testing/shared.js";
import { OpenSwarm, memOpenSwarm } from "../testing/memswarm.js";
import { Discovery } from "./discovery.js";
import { Identity } from "./identity.js";
import { Libp2pTransport } from "./libp2p.js";
import { MemoryDht, MemoryNetwork, MemoryTransport } from "./memory.js";
import { modelFingerprint } from "./node/index.js";
import { MAX_CONTROL_BYTES, NodeRecord, PROTOCOLS, Response, blockKey, blocksOf, providerKeys } from "./protocol/index.js";
import { serveRequests } from "./rpc.js";

const r = (start: number, end: number) => ({ start, end });
const WANT = goldenIds("4").slice(0, 61); // BOS + 60 tokens
const key = (s: string) => blockKey(s, r(0, 1));
const wait = (ms: number) => new Promise((res) => setTimeout(res, ms));

async function collect(d: Discovery, k: Uint8Array, ms = 3000): Promise<string[]> {
  const out: string[] = [];
  for await (const p of d.find(k, AbortSignal.timeout(ms))) out.push(p.peer);
  return out.sort();
}

async function until(f: () => boolean, ms: number, what: string): Promise<number> {
  const t0 = performance.now();
  while (!f()) {
    if (performance.now() - t0 > ms) throw new Error(`not within ${ms} ms: ${what}`);
    await wait(5);
  }
  return performance.now() - t0;
}

describe("discovery keys", () => {
  it("blocks cut a model into at most 16 blocks; a range provides the blocks it overlaps", () => {
    expect(blocksOf(r(0, 5), 5)).toEqual([r(0, 1), r(1, 2), r(2, 3), r(3, 4), r(4, 5)]);
    expect(blocksOf(r(3, 20), 80)).toEqual([r(0, 5), r(5, 10), r(10, 15), r(15, 20)]);
    expect(blocksOf(r(79, 80), 80)).toEqual([r(75, 80)]);
    expect(blocksOf(r(0, 33), 33)).toHaveLength(11); // 3 layers a block
    expect(providerKeys("m", [r(0, 2), r(1, 3)], 5)).toHaveLength(3);
    // keys differ by model and by block
    const hex = (k: Uint8Array) => Buffer.from(k).toString("hex");
    expect(new Set([hex(blockKey("a", r(0, 1))), hex(blockKey("b", r(0, 1))), hex(blockKey("a", r(1, 2)))]).size).toBe(3);
  });
});

// Every Discovery implementation: three peers that can reach each other only through a fourth.
interface Peers { provider: Discovery; other: Discovery; finder: Discovery; providerId: string; otherId: string; lone: Discovery; stop(): Promise<void> }

const implementations: [string, () => Promise<Peers>][] = [
  ["memory", async () => {
    const net = new MemoryNetwork(), dht = new MemoryDht();
    const [a, b, c, d] = await Promise.all([1, 2, 3, 4].map((i) => MemoryTransport.create(net, `10.9.0.${i}`)));
    d.partition();
    return { provider: dht.for(a), other: dht.for(b), finder: dht.for(c), providerId: a.peerId, otherId: b.peerId, lone: dht.for(d), stop: async () => {} };
  }],
  ["libp2p Kad-DHT", async () => {
    const mk = async (bootstrap: string[] = []) => Libp2pTransport.create({ identity: await Identity.generate(), dht: true, bootstrap });
    const boot = await mk();
    const bare = boot.addrs()[0].replace(/\/p2p\/.*/, ""); // an address without the peer id works too
    const provider = await mk([boot.addrs()[0]]);
    const other = await mk([bare]);
    const finder = await mk([other.addrs()[0]]); // knows only `other`: the provider is found through the DHT
    const lone = await mk();
    return {
      provider: provider.discovery(), other: other.discovery(), finder: finder.discovery(), providerId: provider.peerId, otherId: other.peerId, lone: lone.discovery(),
      stop: async () => void (await Promise.all([boot, provider, other, finder, lone].map((t) => t.stop()))),
    };
  }],
];

describe.each(implementations)("Discovery compliance: %s", (_name, make) => {
  it("providers are found by a peer that never met them, each once, per key; a peer alone cannot provide", async () => {
    const p = await make();
    try {
      await p.provider.provide([key("x"), key("y")], AbortSignal.timeout(10_000));
      await p.other.provide([key("x")], AbortSignal.timeout(10_000));
      await p.provider.provide([key("x")], AbortSignal.timeout(10_000)); // again: still one entry
      expect(await collect(p.finder, key("x"))).toEqual([p.providerId, p.otherId].sort());
      expect(await collect(p.finder, key("y"))).toEqual([p.providerId]);
      expect(await collect(p.finder, key("nobody"))).toEqual([]);
      await expect(p.lone.provide([key("x")], AbortSignal.timeout(1500))).rejects.toThrow();
    } finally {
      await p.stop();
    }
  });
});

describe("the DHT under a flood (libp2p)", () => {
  it("a peer providing keys by the hundred fills no one's memory: provider records are capped per provider and in all", async () => {
    const mk = async (o: Partial<Parameters<typeof Libp2pTransport.create>[0]> = {}) => Libp2pTransport.create({ identity: await Identity.generate(), dht: true, ...o });
    const victim = await mk({ maxProviderRecords: { total: 40, perPeer: 10 } });
    const flooder = await mk({ bootstrap: [victim.addrs()[0]] });
    const honest = await mk({ bootstrap: [victim.addrs()[0]] });
    const finder = await mk({ bootstrap: [victim.addrs()[0]] });
    try {
      const keys = Array.from({ length: 30 }, (_, i) => blockKey("flood", r(i, i + 1)));
      await flooder.discovery().provide(keys, AbortSignal.timeout(20_000)).catch(() => {}); // refused past its share
      const before = victim.providerRecords();
      expect(before).toBe(10); // the flooder's share of the 30 it sent
      await honest.discovery().provide([key("honest")], AbortSignal.timeout(10_000));
      expect(victim.providerRecords()).toBe(before + 1); // an honest provider still gets in
      expect(await collect(finder.discovery(), key("honest"))).toEqual([honest.peerId]);
    } finally {
      await Promise.all([victim, flooder, honest, finder].map((t) => t.stop()));
    }
  });
});

let sw: OpenSwarm | undefined;
afterEach(async () => {
  await sw?.stop();
  sw = undefined;
});

describe("a swarm found through the DHT (in memory)", () => {
  it("two gateways find the same nodes through the DHT alone and answer at the same time, exactly", async () => {
    sw = await memOpenSwarm(STORIES_GGUF, [r(0, 2), r(2, 4), r(4, 5)], { gateways: 2 });
    const [g1, g2] = sw.gateways;
    for (const g of [g1, g2]) await until(() => g.serving().length === 3, 2000, "every node found");
    for (const g of [g1, g2]) expect(g.serving().map((n) => n.via)).toEqual(["dht", "dht", "dht"]); // nobody announced to a gateway
    const owners = new Set<string>();
    const seeOwners = () => sw!.nodes.forEach((n) => [...n.sessions.values()].forEach((s) => owners.add(s.gateway)));
    const [a, b] = await Promise.all([sw.complete(g1, [1], 60, seeOwners), sw.complete(g2, [1], 60, seeOwners)]);
    expect(a).toEqual(WANT);
    expect(b).toEqual(WANT);
    expect(owners).toEqual(new Set([g1.peerId, g2.peerId])); // the nodes served both at once
  });

  it("killing one gateway mid-answer changes nothing for the other", async () => {
    sw = await memOpenSwarm(STORIES_GGUF, [r(0, 2), r(2, 4), r(4, 5)], { gateways: 2 });
    const [g1, g2] = sw.gateways;
    let killed = false;
    const first = sw.complete(g1, [1], 200).catch((e) => e as Error);
    const second = await sw.complete(g2, [1], 60, (n) => {
      if (n === 20 && !killed) {
        killed = true;
        void g1.stop();
      }
    });
    expect(killed).toBe(true);
    expect(second).toEqual(WANT);
    expect(g2.stats.recoveries).toBe(0);
    expect(await first).toBeInstanceOf(Error); // the killed gateway's own answer ends
    expect(g2.serving()).toHaveLength(3);
    expect(await sw.complete(g2, [1], 60)).toEqual(WANT);
  });

  it("a node that vanishes without a word drops out when its record expires (TTL); answers stay exact", async () => {
    const ttl = 400;
    sw = await memOpenSwarm(STORIES_GGUF, [r(0, 2), r(2, 5), r(2, 5)], { gateway: { recordTtlMs: ttl, discoverMs: 50 } });
    const gw = sw.gateways[0];
    await until(() => gw.serving().length === 3, 2000, "every node found");
    const victim = sw.nodes[2].peerId;
    await wait(60); // a round has just refreshed it
    const t0 = performance.now();
    sw.transports[2].partition(); // no disconnect: its DHT record stays, it just never answers again
    const ms = await until(() => gw.dir.get(victim)!.state === "lost", 3 * ttl, "the vanished node expires");
    const waited = performance.now() - t0;
    console.log(`vanished node dropped by the gateway ${waited.toFixed(0)} ms after it vanished (TTL ${ttl} ms)`);
    expect(ms).toBeGreaterThan(ttl - 150);
    expect(ms).toBeLessThan(ttl + 250);
    expect(gw.serving().map((n) => n.record.peer)).not.toContain(victim);
    expect(await sw.complete(gw, [1], 60)).toEqual(WANT);
    expect([...gw.sessions.all.values()].every((s) => !s.route.some((x) => x.id === victim))).toBe(true);
    // a live node whose record keeps arriving never expires
    expect(gw.dir.get(sw.nodes[1].peerId)!.state).toBe("serving");
  });

  it("records that name another peer or another model are ignored (asked once), and the honest nodes serve", async () => {
    sw = await memOpenSwarm(STORIES_GGUF, [r(0, 5)], { gateway: { discoverMs: 30 } });
    const gw = sw.gateways[0];
    await until(() => gw.serving().length === 1, 2000, "the honest node found");
    const honest = sw.nodes[0];
    const keys = providerKeys(modelFingerprint(honest.file, honest.cfg), [r(0, 5)], 5);
    const asked = new Map<string, number>();
    const liar = async (lie: (self: string) => NodeRecord | Response) => {
      const t = await MemoryTransport.create(sw!.net, `10.66.0.${asked.size + 1}`);
      asked.set(t.peerId, 0);
      await t.handle(PROTOCOLS.control, serveRequests(async () => {
        asked.set(t.peerId, asked.get(t.peerId)! + 1);
        const x = lie(t.peerId);
        return "type" in x ? x : { type: "record", record: x };
      }, () => {}), { maxMessageBytes: MAX_CONTROL_BYTES, maxStreamsPerConnection: 8 });
      await sw!.dht.for(t).provide(keys);
      return t.peerId;
    };
    const forged = await liar(() => honest.record()); // the honest node's record, sent by someone else
    const foreign = await liar((self) => {
      const rec = honest.record();
      return { ...rec, peer: self, model: { ...rec.model, fingerprint: "llama:64x5:512:48:999999" } }; // another model, same shape
    });
    const junk = await liar(() => ({ type: "ok" })); // not a record at all
    await wait(300); // about ten rounds
    for (const p of [forged, foreign, junk]) {
      expect(gw.dir.get(p), p).toBeUndefined();
      expect(asked.get(p), "asked again and again").toBe(1);
    }
    expect(gw.finder!.stats.ignored).toBe(3);
    expect(gw.dir.get(honest.peerId)!.state).toBe("serving");
    expect(gw.dir.gate.banned(honest.peerId)).toBeUndefined();
    expect(await sw.complete(gw, [1], 60)).toEqual(WANT);
  });

  it("a node that joins later is found within a round; --layers auto picks the missing layers from the DHT's holders", async () => {
    sw = await memOpenSwarm(STORIES_GGUF, [r(0, 2)], { gateway: { discoverMs: 5000, discoverFastMs: 20 } });
    const gw = sw.gateways[0];
    expect(gw.coverage().missing).toEqual([r(2, 5)]);
    // a node with --layers auto (room for 3 layers): it asks the DHT's holders, not a gateway
    const t = await MemoryTransport.create(sw.net, "10.1.9.9");
    const { SwarmNode } = await import("./node/index.js");
    const { createKernels } = await import("../kernels/index.js");
    const node = new SwarmNode({ modelPath: STORIES_GGUF, ranges: [], kernels: createKernels(), kvBudgetBytes: 64 * 2 ** 20, provideMs: 100, discovery: sw.dht.for(t), identity: t.identity }, t);
    sw.nodes.push(node);
    const t0 = performance.now();
    await node.start([], { maxLayers: 3, surveyMs: 500 });
    expect(node.ranges()).toEqual([r(2, 5)]);
    await gw.waitForCoverage(2000); // fast rounds while layers are missing
    console.log(`late node usable by the gateway ${(performance.now() - t0).toFixed(0)} ms after it started (memory, 20 ms rounds)`);
    expect(await sw.complete(gw, [1], 60)).toEqual(WANT);
  });
});
