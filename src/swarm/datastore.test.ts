// libp2p's store as we bound it: what a DHT peer sends us cannot fill memory.

import { Key } from "interface-datastore";
import { describe, expect, it } from "vitest";
import { BoundedDatastore } from "./libp2p.js";

const v = (n: number) => new Uint8Array(n);

describe("the bounded datastore behind the DHT", () => {
  it("refuses keys and values no honest peer sends (a CID of megabytes, a record of megabytes)", async () => {
    const d = new BoundedDatastore({ total: 100, perPeer: 5 });
    await d.put(new Key(`/dht/provider/${"a".repeat(60)}/peerA`), v(8));
    expect(() => d.put(new Key(`/dht/provider/${"a".repeat(3_000_000)}/peerA`), v(8))).toThrow(/key of 3000\d+ characters/);
    expect(() => d.put(new Key(`/dht/provider/${"b".repeat(60)}/peerA`), v(4096))).toThrow(/value of 4096 bytes/);
    expect(() => d.put(new Key(`/peers/${"p".repeat(50)}`), v(1 << 20))).toThrow(/value of 1048576 bytes/);
    expect(d.providerRecords).toBe(1);
  });

  it("caps provider records per provider and in all, and peers in all", async () => {
    const d = new BoundedDatastore({ total: 20, perPeer: 3 });
    for (let i = 0; i < 3; i++) await d.put(new Key(`/dht/provider/k${i}/flooder`), v(8));
    expect(() => d.put(new Key("/dht/provider/k9/flooder"), v(8))).toThrow(/provider records full/);
    await d.put(new Key("/dht/provider/k9/honest"), v(8)); // someone else still gets in
    const mine = new BoundedDatastore({ total: 2, perPeer: 1 }, "me");
    await mine.put(new Key("/dht/provider/a/x"), v(8));
    await mine.put(new Key("/dht/provider/b/y"), v(8));
    expect(() => mine.put(new Key("/dht/provider/c/z"), v(8))).toThrow(/full/);
    for (const k of ["a", "b", "c"]) await mine.put(new Key(`/dht/provider/${k}/me`), v(8)); // our own always fit
    await d.put(new Key("/peers/p0"), v(100));
    await d.put(new Key("/peers/p1"), v(100));
    expect(() => d.put(new Key("/peers/p2"), v(100))).toThrow(/peer store holds 2 peers/);
    await d.delete(new Key("/peers/p0"));
    await d.put(new Key("/peers/p2"), v(100));
  });
});

describe("peers found by mDNS", () => {
  it("are dialled only at LAN addresses over TCP", async () => {
    const { isLanTcp } = await import("./libp2p.js");
    const { multiaddr } = await import("@multiformats/multiaddr");
    const ok = ["/ip4/192.168.1.5/tcp/4001", "/ip4/10.0.0.2/tcp/1", "/ip4/172.20.3.4/tcp/9", "/ip4/127.0.0.1/tcp/5", "/ip6/fe80::1/tcp/5", "/ip6/fd00::2/tcp/5"];
    const no = ["/ip4/8.8.8.8/tcp/53", "/ip4/172.32.0.1/tcp/1", "/dns4/example.com/tcp/443", "/ip4/192.168.1.5/udp/4001", "/ip6/2001:db8::1/tcp/5"];
    expect(ok.filter((a) => isLanTcp(multiaddr(a)))).toEqual(ok);
    expect(no.filter((a) => isLanTcp(multiaddr(a)))).toEqual([]);
  });
});

describe("provider lookups", () => {
  it("read one key's providers from an index, the same records a full walk finds", async () => {
    const d = new BoundedDatastore({ total: 1000, perPeer: 100 });
    for (let c = 0; c < 20; c++) for (let p = 0; p < 5; p++) await d.put(new Key(`/dht/provider/cid${c}/peer${p}`), v(8));
    const got: string[] = [];
    for await (const e of d.query({ prefix: "/dht/provider/cid7" })) got.push(e.key.toString());
    expect(got.sort()).toEqual([0, 1, 2, 3, 4].map((p) => `/dht/provider/cid7/peer${p}`));
    await d.delete(new Key("/dht/provider/cid7/peer2"));
    let all = 0;
    for await (const _ of d.query({ prefix: "/dht/provider" })) all++;
    expect(all).toBe(99);
    const after: string[] = [];
    for await (const e of d.query({ prefix: "/dht/provider/cid7" })) after.push(e.key.toString());
    expect(after).toHaveLength(4);
  });
});
