// Limits per address against peers behind a relay and IPv6 /64s (security
// review, HIGH and MEDIUM): a relayed peer is its own group, never the
// relay's address nor a local one; an IPv6 /64 is one address.

import { afterAll, describe, expect, it } from "vitest";
import { multiaddr } from "@multiformats/multiaddr";
import { addressGroup, networkOf, remoteKey } from "./addrgroup.js";
import { Identity } from "./identity.js";
import { Libp2pTransport } from "./libp2p.js";
import { PeerGate } from "./policy.js";
import { ipOfAddrs } from "./node/index.js";
import { Channel } from "./transport.js";

const R = "12D3KooWRelayRelayRelayRelayRelayRelayRelayRelayRela";
const circuit = (peer: string) => multiaddr(`/ip4/203.0.113.7/tcp/4001/p2p/${R}/p2p-circuit/p2p/${peer}`);

describe("address groups", () => {
  it("IPv4 is itself, IPv6 its /64 (any spelling), a mapped IPv4 the IPv4; networks are /16 and /48", () => {
    expect(addressGroup("198.51.100.4")).toBe("198.51.100.4");
    expect(addressGroup("2001:db8:1:2::1")).toBe(addressGroup("2001:0db8:0001:0002:ffff:1:2:3"));
    expect(addressGroup("2001:db8:1:2::1")).toBe("2001:db8:1:2::/64");
    expect(addressGroup("2001:db8:1:3::1")).not.toBe(addressGroup("2001:db8:1:2::1"));
    expect(addressGroup("::ffff:198.51.100.4")).toBe("198.51.100.4");
    expect(addressGroup(addressGroup("2001:db8:1:2::1"))).toBe("2001:db8:1:2::/64");
    expect(addressGroup("::1")).toBe("::1");
    expect(networkOf("198.51.100.4")).toBe(networkOf("198.51.7.9"));
    expect(networkOf("198.52.100.4")).not.toBe(networkOf("198.51.100.4"));
    expect(networkOf("2001:db8:1:2::1")).toBe(networkOf("2001:db8:1:ffff::9"));
    expect(networkOf("2001:db8:2::1")).not.toBe(networkOf("2001:db8:1::1"));
  });

  it("a relayed connection is keyed by relay and peer, not the relay's address", () => {
    expect(remoteKey(circuit("12D3KooWPeerA"))).toBe(`relay:${R}/12D3KooWPeerA`);
    expect(remoteKey(multiaddr("/ip6/2001:db8:1:2::99/tcp/1"))).toBe("2001:db8:1:2::/64");
  });
});

describe("a gateway's claimed addresses (a node's sessions count against them)", () => {
  it("IPv6 by /64 whatever the spelling; a gateway behind a relay is its own, not the relay's address", () => {
    expect(ipOfAddrs(["/ip6/2001:db8::1/tcp/1"])).toBe(ipOfAddrs(["/ip6/2001:db8:0:0:1::2/tcp/1"]));
    expect(ipOfAddrs([`/ip4/203.0.113.7/tcp/4001/p2p/${R}/p2p-circuit`], "12D3KooWGw1")).toBe(`relay:${R}/12D3KooWGw1`);
    expect(ipOfAddrs([`/ip4/203.0.113.7/tcp/4001/p2p/${R}/p2p-circuit`], "12D3KooWGw2")).not.toBe(ipOfAddrs([`/ip4/203.0.113.7/tcp/4001/p2p/${R}/p2p-circuit`], "12D3KooWGw1"));
    expect(ipOfAddrs(["/ip4/198.51.100.4/tcp/1"])).toBe("198.51.100.4");
  });
});

describe("the gate with relayed peers and IPv6", () => {
  it("attackers' circuits through a relay neither fill the relay's address nor get it banned", () => {
    const gate = new PeerGate({ maxConnectionsPerIp: 4 });
    for (let i = 0; i < 40; i++) {
      const k = remoteKey(circuit(`12D3KooWAttacker${i}`));
      if (gate.allowIp(k)) gate.opened(k);
      gate.ban(`12D3KooWAttacker${i}`, k, "bad frames");
    }
    expect(gate.allowIp("203.0.113.7"), "the relay itself").toBe(true);
    expect(gate.allowIp(remoteKey(circuit("12D3KooWHonest"))), "an honest peer through the relay").toBe(true);
  });

  it("one peer through one relay, and one relay, have caps of their own", () => {
    const gate = new PeerGate({ maxConnectionsPerRelayedPeer: 2, maxConnectionsPerRelay: 3 });
    const a = remoteKey(circuit("12D3KooWA"));
    gate.opened(a);
    gate.opened(a);
    expect(gate.allowIp(a)).toBe(false);
    gate.opened(remoteKey(circuit("12D3KooWB")));
    expect(gate.allowIp(remoteKey(circuit("12D3KooWC"))), "the relay's share is used").toBe(false);
    gate.closed(a);
    expect(gate.allowIp(remoteKey(circuit("12D3KooWC")))).toBe(true);
  });

  it("a relayed peer never gets the local exemption", () => {
    const gate = new PeerGate({ maxConnectionsPerRelayedPeer: 1, local: new Set(["203.0.113.7"]) });
    const k = `relay:${R}/12D3KooWA`;
    gate.opened(k);
    expect(gate.allowIp(k)).toBe(false);
  });

  it("an IPv6 /64 is one address: its connections are capped together and bans from it add up", () => {
    const gate = new PeerGate({ maxConnectionsPerIp: 4 });
    for (let i = 1; i <= 4; i++) gate.opened(`2001:db8:1:2::${i}`);
    expect(gate.allowIp("2001:db8:1:2::ffff")).toBe(false);
    expect(gate.allowIp("2001:db8:1:3::1")).toBe(true);
    const banned = new PeerGate();
    for (let i = 1; i <= 8; i++) banned.ban(`12D3KooWBad${i}`, `2001:db8:9:9::${i}`, "bad frames");
    expect(banned.allowIp("2001:db8:9:9:abcd::1")).toBe(false);
  });
});

describe("relayed channels (libp2p, loopback)", () => {
  const started: Libp2pTransport[] = [];
  afterAll(async () => {
    await Promise.all(started.map((t) => t.stop()));
  });
  const peer = async () => {
    const t = await Libp2pTransport.create({ identity: await Identity.generate(), listen: ["/ip4/127.0.0.1/tcp/0"], nat: true });
    started.push(t);
    return t;
  };

  it("a peer reached through a relay on this machine is relay:<relay>/<peer>, not loopback", async () => {
    const [relay, victim, stranger] = await Promise.all([peer(), peer(), peer()]);
    const ra = relay.addrs()[0].includes("/p2p/") ? relay.addrs()[0] : `${relay.addrs()[0]}/p2p/${relay.peerId}`;
    const tm = (victim as unknown as { node: { components: { transportManager: { listen(a: unknown[]): Promise<void> } } } }).node.components.transportManager;
    await tm.listen([multiaddr(`${ra}/p2p-circuit`)]);
    const got: Channel[] = [];
    await victim.handle(["/test/key/1.0.0"], (ch) => got.push(ch), { maxMessageBytes: 1024, maxStreamsPerConnection: 4 });
    const ch = await stranger.dial(victim.peerId, [`${ra}/p2p-circuit/p2p/${victim.peerId}`], "/test/key/1.0.0", { maxMessageBytes: 1024 });
    await ch.send(Uint8Array.of(1));
    for (let i = 0; i < 100 && !got.length; i++) await new Promise((r) => setTimeout(r, 50));
    expect(got[0].reach).toBe("relayed");
    expect(got[0].remoteIp).toBe(`relay:${relay.peerId}/${stranger.peerId}`);
    expect(victim.gate.allowIp("127.0.0.1")).toBe(true);
  }, 30_000);
});
