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
    await d.put(new Key("/peers/p0"), v(100));
    await d.put(new Key("/peers/p1"), v(100));
    expect(() => d.put(new Key("/peers/p2"), v(100))).toThrow(/peer store holds 2 peers/);
    await d.delete(new Key("/peers/p0"));
    await d.put(new Key("/peers/p2"), v(100));
  });
});
