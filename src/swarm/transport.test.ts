// The compliance suite every Transport must pass: the in-memory one the fast
// tests use and the libp2p one the processes use behave the same where the
// swarm relies on it (authenticated peers, order, size limits, backpressure,
// stream limits, disconnects).

import { afterEach, describe, expect, it } from "vitest";
import { Identity } from "./identity.js";
import { Libp2pTransport, MessageDecoder } from "./libp2p.js";
import { MemoryNetwork, MemoryTransport } from "./memory.js";
import { Channel, Transport } from "./transport.js";

const P = "/layerswarm/test/1";

interface Pair {
  a: Transport;
  b: Transport;
}

const impls: [string, () => Promise<Pair>][] = [
  ["memory", async () => {
    const net = new MemoryNetwork();
    return { a: await MemoryTransport.create(net, "10.0.0.1"), b: await MemoryTransport.create(net, "10.0.0.2") };
  }],
  ["libp2p", async () => ({
    a: await Libp2pTransport.create({ identity: await Identity.generate() }),
    b: await Libp2pTransport.create({ identity: await Identity.generate() }),
  })],
];

const bytes = (n: number, seed: number) => Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed) & 255);
const stoppers: (() => Promise<void>)[] = [];
afterEach(async () => {
  await Promise.all(stoppers.splice(0).map((s) => s().catch(() => {})));
});

describe.each(impls)("Transport compliance: %s", (_name, make) => {
  async function pair(handle: (ch: Channel) => void, o = { maxMessageBytes: 4 << 20, maxStreamsPerConnection: 4 }) {
    const p = await make();
    stoppers.push(() => p.a.stop(), () => p.b.stop());
    await p.b.handle([P], handle, o);
    return p;
  }

  it("delivers whole messages in order, both ways, naming the authenticated sender", async () => {
    const got: Uint8Array[] = [];
    let from = "";
    const { a, b } = await pair((ch) => {
      from = ch.remotePeer;
      void (async () => {
        try {
          for await (const m of ch.messages()) {
            got.push(m);
            await ch.send(m.slice().reverse());
          }
        } catch { /* the test ended */ }
      })();
    });
    const ch = await a.dial(b.peerId, b.addrs(), P, { maxMessageBytes: 4 << 20 });
    expect(ch.remotePeer).toBe(b.peerId);
    const sent = [bytes(1, 1), bytes(70_000, 2), bytes(3, 3), bytes(1 << 20, 4)];
    for (const m of sent) await ch.send(m);
    const back: Uint8Array[] = [];
    for await (const m of ch.messages()) {
      back.push(m);
      if (back.length === sent.length) break;
    }
    expect(got.map((m) => m.length), "received lengths").toEqual(sent.map((m) => m.length));
    expect(back.map((m) => m.length), "echoed lengths").toEqual(sent.map((m) => m.length));
    expect(from).toBe(a.peerId);
    expect(got.map((m) => Buffer.from(m).toString("hex"))).toEqual(sent.map((m) => Buffer.from(m).toString("hex")));
    expect(back.map((m) => Buffer.from(m).toString("hex"))).toEqual(sent.map((m) => Buffer.from(m.slice().reverse()).toString("hex")));
  });

  it("a message over the receiver's limit resets that stream only", async () => {
    let errors = 0, ok = 0;
    const { a, b } = await pair((ch) => {
      void (async () => {
        try {
          for await (const m of ch.messages()) ok += m.length;
        } catch {
          errors++;
        }
      })();
    }, { maxMessageBytes: 1024, maxStreamsPerConnection: 4 });
    const big = await a.dial(b.peerId, b.addrs(), P, { maxMessageBytes: 1024 });
    await big.send(bytes(4096, 1)).catch(() => {});
    for (let i = 0; i < 100 && errors === 0; i++) await new Promise((r) => setTimeout(r, 20));
    expect(errors).toBe(1);
    const small = await a.dial(b.peerId, b.addrs(), P, { maxMessageBytes: 1024 });
    await small.send(bytes(1000, 2));
    for (let i = 0; i < 100 && ok < 1000; i++) await new Promise((r) => setTimeout(r, 20));
    expect(ok).toBe(1000);
  });

  it("a receiver that does not read holds the sender back; reading releases it, nothing lost", async () => {
    let reader: Channel | undefined;
    const { a, b } = await pair((ch) => (reader = ch));
    const ch = await a.dial(b.peerId, b.addrs(), P, { maxMessageBytes: 4 << 20 });
    const N = 48, size = 1 << 20; // 48 MiB: more than any window or buffer
    let resolved = 0;
    const sending = (async () => {
      for (let i = 0; i < N; i++) {
        await ch.send(bytes(size, i));
        resolved++;
      }
    })();
    await new Promise((r) => setTimeout(r, 1000));
    expect(resolved).toBeLessThan(N); // held back while nobody reads
    let n = 0, intact = true;
    for await (const m of reader!.messages()) {
      intact &&= m.length === size && m[7] === bytes(size, n)[7];
      if (++n === N) break;
    }
    await sending;
    expect(resolved).toBe(N);
    expect(intact).toBe(true);
  });

  it("messages at the size limit, back to back, to a reader that keeps pausing, arrive whole and in order", async () => {
    // A resumed stream hands over everything it held in one go: the end of one
    // message and the start of the next. That is not an oversized message.
    let reader: Channel | undefined;
    const max = 4 << 20;
    const { a, b } = await pair((ch) => (reader = ch), { maxMessageBytes: max, maxStreamsPerConnection: 4 });
    const ch = await a.dial(b.peerId, b.addrs(), P, { maxMessageBytes: 1024 });
    const N = 10;
    const sending = (async () => {
      for (let i = 0; i < N; i++) await ch.send(bytes(max - (i % 3), i));
    })();
    let n = 0, intact = true;
    for await (const m of reader!.messages()) {
      const want = bytes(max - (n % 3), n);
      intact &&= m.length === want.length && Buffer.compare(m, want) === 0;
      await new Promise((r) => setTimeout(r, 30)); // a busy receiver
      if (++n === N) break;
    }
    await sending;
    expect(intact).toBe(true);
    expect(reader!.closed).toBe(false);
  });

  it("notices when the peer goes away; the stream ends with an error or closes", async () => {
    let open: Channel | undefined;
    const { a, b } = await pair((ch) => (open = ch));
    const gone: string[] = [];
    a.onDisconnect((p) => gone.push(p));
    const ch = await a.dial(b.peerId, b.addrs(), P, { maxMessageBytes: 1024 });
    await ch.send(bytes(10, 1));
    for (let i = 0; i < 50 && !open; i++) await new Promise((r) => setTimeout(r, 20));
    await b.stop();
    for (let i = 0; i < 100 && !gone.length; i++) await new Promise((r) => setTimeout(r, 20));
    expect(gone).toContain(b.peerId);
    let ended = false;
    try {
      for await (const _ of ch.messages()) void _;
      ended = true;
    } catch {
      ended = true;
    }
    expect(ended).toBe(true);
  });

  it("inbound streams per connection are capped; the others keep working", async () => {
    const open: Channel[] = [];
    const { a, b } = await pair((ch) => {
      open.push(ch);
      void (async () => {
        try {
          for await (const m of ch.messages()) await ch.send(m);
        } catch { /* reset */ }
      })();
    }, { maxMessageBytes: 1024, maxStreamsPerConnection: 2 });
    const results = await Promise.allSettled(Array.from({ length: 4 }, async (_, i) => {
      const ch = await a.dial(b.peerId, b.addrs(), P, { maxMessageBytes: 1024 });
      await ch.send(bytes(8, i));
      for await (const m of ch.messages()) return m[0];
      throw new Error("closed without an answer");
    }));
    expect(results.filter((r) => r.status === "fulfilled").length).toBe(2);
    expect(open.length).toBeLessThanOrEqual(2);
  });
});

describe("MessageDecoder (libp2p streams)", () => {
  const frame = (m: Uint8Array) => {
    const pre: number[] = [];
    let n = m.length;
    do {
      pre.push((n & 0x7f) | (n > 0x7f ? 0x80 : 0));
      n = Math.floor(n / 128);
    } while (n > 0);
    return Buffer.concat([Buffer.from(pre), m]);
  };

  it("takes messages apart whatever the chunking: byte by byte, whole, or one chunk ending one and starting the next", () => {
    const msgs = [bytes(1000, 1), bytes(1, 2), bytes(300, 3), bytes(1000, 4)];
    const all = Buffer.concat(msgs.map(frame));
    for (const step of [1, 7, 1002, all.length]) {
      const d = new MessageDecoder(1000), out: Uint8Array[] = [];
      for (let o = 0; o < all.length; o += step) d.decode(all.subarray(o, o + step), out);
      expect(out.map((m) => Buffer.from(m).toString("hex")), `chunks of ${step}`).toEqual(msgs.map((m) => Buffer.from(m).toString("hex")));
      expect(d.buffered).toBe(0);
    }
  });

  it("refuses a message over its limit from the prefix alone, before any of it arrives", () => {
    const d = new MessageDecoder(1000);
    expect(() => d.decode(frame(bytes(1001, 1)).subarray(0, 2), [])).toThrow(/1001 bytes \(at most 1000/);
    expect(() => new MessageDecoder(1000).decode(Uint8Array.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff]), [])).toThrow(/at most 1000/);
  });
});
