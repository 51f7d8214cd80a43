// The relay's bounds with real libp2p peers on loopback (every peer here is
// at 127.0.0.1, like machines behind one NAT): reservations per address,
// circuits per source peer; a stream over a circuit carries our protocol and
// says it is relayed. Real NATs: nat.process.test.ts.

import { afterAll, describe, expect, it } from "vitest";
import { multiaddr } from "@multiformats/multiaddr";
import { Identity } from "./identity.js";
import { Libp2pTransport } from "./libp2p.js";
import { Channel } from "./transport.js";

const LOCAL = ["/ip4/127.0.0.1/tcp/0"];
const started: Libp2pTransport[] = [];
afterAll(async () => {
  await Promise.all(started.map((t) => t.stop()));
});

async function peer(nat: Parameters<typeof Libp2pTransport.create>[0]["nat"] = true): Promise<Libp2pTransport> {
  const t = await Libp2pTransport.create({ identity: await Identity.generate(), listen: LOCAL, nat });
  started.push(t);
  return t;
}

const relayAddr = (r: Libp2pTransport) => { const a = r.addrs()[0]; return a.includes("/p2p/") ? a : `${a}/p2p/${r.peerId}`; };

// Ask a relay for a slot, as a peer that found itself unreachable does.
async function reserve(t: Libp2pTransport, relay: Libp2pTransport): Promise<string[]> {
  const tm = (t as unknown as { node: { components: { transportManager: { listen(a: unknown[]): Promise<void> } } } }).node.components.transportManager;
  await tm.listen([multiaddr(`${relayAddr(relay)}/p2p-circuit`)]);
  return t.addrs().filter((a) => a.includes("/p2p-circuit"));
}

describe("relay limits (libp2p, loopback)", () => {
  it("reservations per address and circuits per source peer are capped; a circuit carries our protocol and says relayed", async () => {
    const relay = await peer({ reservationsPerIp: 2, circuitsPerPeer: 1 });
    const [a, b, c, d] = await Promise.all([peer(), peer(), peer(), peer()]);
    for (const p of [a, b]) expect((await reserve(p, relay)).length, "a slot on the relay").toBeGreaterThan(0);
    await expect(reserve(c, relay), "a third slot from the same address").rejects.toThrow();

    // d reaches a through the relay: our protocol runs on the limited connection, and the channel says so
    const got: Channel[] = [];
    for (const p of [a, b])
      await p.handle(["/test/echo/1.0.0"], (ch) => {
        got.push(ch);
        void (async () => {
          for await (const m of ch.messages()) await ch.send(m);
        })();
      }, { maxMessageBytes: 1 << 20, maxStreamsPerConnection: 4 });
    const viaRelay = `${relayAddr(relay)}/p2p-circuit/p2p/${a.peerId}`;
    const ch = await d.dial(a.peerId, [viaRelay], "/test/echo/1.0.0", { maxMessageBytes: 1 << 20 });
    expect(ch.reach).toBe("relayed");
    await ch.send(new Uint8Array(100_000).fill(7));
    for await (const m of ch.messages()) {
      expect(m.length).toBe(100_000);
      break;
    }
    expect(got[0].reach).toBe("relayed");
    expect(d.reach(a.peerId)).toBe("relayed");

    // a second circuit from d (to b, which would answer) is one more than its share; c, with none yet, gets one
    const toB = `${relayAddr(relay)}/p2p-circuit/p2p/${b.peerId}`;
    await expect(d.dial(b.peerId, [toB], "/test/echo/1.0.0", { maxMessageBytes: 1 << 20, signal: AbortSignal.timeout(10_000) })).rejects.toThrow(/cannot reach/);
    const fromC = await c.dial(b.peerId, [toB], "/test/echo/1.0.0", { maxMessageBytes: 1 << 20 });
    expect(fromC.reach).toBe("relayed");
  }, 60_000);

  it("circuits are capped per source address as well as per peer: fresh ids from one address get no more (security review)", async () => {
    const relay = await peer({ circuitsPerPeer: 8, circuitsPerIp: 1 });
    const [a, d, c] = await Promise.all([peer(), peer(), peer()]);
    expect((await reserve(a, relay)).length).toBeGreaterThan(0);
    await a.handle(["/test/echo/1.0.0"], () => {}, { maxMessageBytes: 1 << 20, maxStreamsPerConnection: 4 });
    const toA = `${relayAddr(relay)}/p2p-circuit/p2p/${a.peerId}`;
    expect((await d.dial(a.peerId, [toA], "/test/echo/1.0.0", { maxMessageBytes: 1 << 20 })).reach).toBe("relayed");
    // c is another id at the same address (127.0.0.1): the address's one circuit is taken
    await expect(c.dial(a.peerId, [toA], "/test/echo/1.0.0", { maxMessageBytes: 1 << 20, signal: AbortSignal.timeout(10_000) })).rejects.toThrow(/cannot reach/);
  }, 60_000);
});
