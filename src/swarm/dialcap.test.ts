// Addresses a stranger can make us dial (security review, LOW): a record,
// the peer store (identify, the DHT) or DCUtR can list any number; at most
// MAX_ADDRS_PER_PEER of them are tried per dial. Counted here by TCP listeners
// on loopback that take each connection and close it.

import * as net from "node:net";
import { afterAll, describe, expect, it } from "vitest";
import { multiaddr } from "@multiformats/multiaddr";
import type { Libp2p } from "@libp2p/interface";
import { Identity } from "./identity.js";
import { Libp2pTransport } from "./libp2p.js";
import { MAX_ADDRS_PER_PEER } from "./nat.js";

describe("addresses dialled per peer", () => {
  const servers: net.Server[] = [];
  const started: Libp2pTransport[] = [];
  afterAll(async () => {
    await Promise.all(started.map((t) => t.stop()));
    for (const s of servers) s.close();
  });

  async function listeners(n: number): Promise<{ addrs: string[]; hit: Set<number> }> {
    const hit = new Set<number>();
    const addrs: string[] = [];
    for (let i = 0; i < n; i++) {
      const s = net.createServer((sock) => {
        hit.add(i);
        sock.destroy();
      });
      servers.push(s);
      await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
      addrs.push(`/ip4/127.0.0.1/tcp/${(s.address() as net.AddressInfo).port}`);
    }
    return { addrs, hit };
  }

  it("a record listing 20 addresses: at most MAX_ADDRS_PER_PEER are dialled", async () => {
    const t = await Libp2pTransport.create({ identity: await Identity.generate() });
    started.push(t);
    const target = (await Identity.generate()).peerId;
    const { addrs, hit } = await listeners(20);
    await expect(t.dial(target, addrs, "/test/x/1.0.0", { maxMessageBytes: 1024, signal: AbortSignal.timeout(20_000) })).rejects.toThrow();
    expect(hit.size).toBeGreaterThan(0);
    expect(hit.size).toBeLessThanOrEqual(MAX_ADDRS_PER_PEER);
  }, 30_000);

  it("a peer store holding 20 addresses of a peer (identify, the DHT, DCUtR's dial path): at most MAX_ADDRS_PER_PEER are dialled", async () => {
    const t = await Libp2pTransport.create({ identity: await Identity.generate() });
    started.push(t);
    const target = await Identity.generate();
    const { addrs, hit } = await listeners(20);
    const node = (t as unknown as { node: Libp2p }).node;
    const { peerIdFromString } = await import("@libp2p/peer-id");
    await node.peerStore.merge(peerIdFromString(target.peerId), { multiaddrs: addrs.map((a) => multiaddr(a)) });
    await expect(node.dial(peerIdFromString(target.peerId), { signal: AbortSignal.timeout(20_000) })).rejects.toThrow();
    expect(hit.size).toBeGreaterThan(0);
    expect(hit.size).toBeLessThanOrEqual(MAX_ADDRS_PER_PEER);
  }, 30_000);
});
