// Reachability by dial-back against hostile answerers (security review, HIGH):
// one peer answering "cannot dial you" used to make a reachable peer
// "unreachable", which turns its DHT serving and relaying off.

import { afterAll, describe, expect, it } from "vitest";
import { multiaddr } from "@multiformats/multiaddr";
import type { Libp2p } from "@libp2p/interface";
import { Identity } from "./identity.js";
import { Libp2pTransport } from "./libp2p.js";
import { Hysteresis, reachabilityVerdict } from "./nat.js";
import { DIALBACK_PROTOCOL } from "./protocol/index.js";

const no = (ip: string, trusted = false) => ({ ok: false, ip, trusted });
const yes = (ip: string, trusted = false) => ({ ok: true, ip, trusted });

describe("reachabilityVerdict", () => {
  it("one stranger's answer decides nothing; a majority over 3 networks does", () => {
    expect(reachabilityVerdict([no("198.51.100.1")])).toBeUndefined();
    expect(reachabilityVerdict([yes("10.0.0.1", true), no("198.51.100.1")])).toBe("reachable");
    expect(reachabilityVerdict([yes("192.0.2.1"), yes("203.0.113.1"), no("198.51.100.1")])).toBe("reachable");
    expect(reachabilityVerdict([no("192.0.2.1"), no("203.0.113.1"), yes("198.51.100.1")])).toBe("unreachable");
  });

  it("many answerers in one network (a /16, an IPv6 /48) are one vote", () => {
    const sybils = Array.from({ length: 5 }, (_, i) => no(`198.51.${i}.1`));
    expect(reachabilityVerdict([yes("192.0.2.1"), yes("203.0.113.1"), ...sybils])).toBe("reachable");
    const v6 = Array.from({ length: 5 }, (_, i) => no(`2001:db8:1:${i}::1`));
    expect(reachabilityVerdict([...v6])).toBeUndefined();
  });

  it("in a small swarm the peers we chose decide, by majority", () => {
    expect(reachabilityVerdict([no("127.0.0.1", true), yes("127.0.0.1", true), yes("127.0.0.1", true)])).toBe("reachable");
    expect(reachabilityVerdict([no("127.0.0.1", true)])).toBe("unreachable");
  });
});

describe("Hysteresis", () => {
  it("the first decision is taken at once; a flip needs two checks in a row", () => {
    const h = new Hysteresis();
    expect(h.observe(undefined)).toBe("unknown");
    expect(h.observe("reachable")).toBe("reachable");
    expect(h.observe("unreachable")).toBe("reachable");
    expect(h.observe("reachable")).toBe("reachable");
    expect(h.observe("unreachable")).toBe("reachable");
    expect(h.observe(undefined)).toBe("reachable");
    expect(h.observe("unreachable")).toBe("unreachable");
  });
});

describe("dial-back with a hostile answerer (libp2p, loopback)", () => {
  const started: Libp2pTransport[] = [];
  afterAll(async () => {
    await Promise.all(started.map((t) => t.stop()));
  });
  const nodeOf = (t: Libp2pTransport) => (t as unknown as { node: Libp2p }).node;
  const dialBackOf = (t: Libp2pTransport) => (t as unknown as { dialBack: { checking: boolean; check(): Promise<unknown> } }).dialBack;

  it("a stranger that connects and always answers 0 cannot make a peer unreachable", async () => {
    const mk = async (bootstrap?: string[]) => {
      const t = await Libp2pTransport.create({ identity: await Identity.generate(), listen: ["/ip4/127.0.0.1/tcp/0"], nat: true, bootstrap });
      started.push(t);
      return t;
    };
    const boot = await mk();
    const ba = boot.addrs()[0].includes("/p2p/") ? boot.addrs()[0] : `${boot.addrs()[0]}/p2p/${boot.peerId}`;
    const victim = await mk([ba]);
    const attacker = await mk();
    const an = nodeOf(attacker);
    await an.unhandle(DIALBACK_PROTOCOL);
    await an.handle(DIALBACK_PROTOCOL, (s) => {
      s.send(Uint8Array.of(0));
      void s.close().catch(() => {});
    });
    const va = victim.addrs()[0].includes("/p2p/") ? victim.addrs()[0] : `${victim.addrs()[0]}/p2p/${victim.peerId}`;
    await an.dial(multiaddr(va));
    const vn = nodeOf(victim);
    // both answerers connected and known to speak dial-back
    for (let i = 0; i < 200; i++) {
      const ready = await Promise.all([boot, attacker].map(async (p) => {
        const id = nodeOf(p).peerId;
        return vn.getConnections(id).length > 0 && ((await vn.peerStore.get(id).catch(() => undefined))?.protocols.includes(DIALBACK_PROTOCOL) ?? false);
      }));
      if (ready.every(Boolean)) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    const db = dialBackOf(victim);
    for (let round = 0; round < 3; round++) {
      while (db.checking) await new Promise((r) => setTimeout(r, 50));
      await db.check();
    }
    expect(victim.reachability()).toBe("reachable");
  }, 60_000);
});
