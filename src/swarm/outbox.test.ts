// The outbox hands a message to an open stream in the turn it is sent, and
// to a stream still being dialled once the dial resolves: messages sent
// across that moment (some before, some while the waiting ones are handed
// over, some after) must still arrive in the order they were sent.

import { afterEach, describe, expect, it } from "vitest";
import { Identity } from "./identity.js";
import { Libp2pTransport } from "./libp2p.js";
import { logger } from "./log.js";
import { MemoryNetwork, MemoryTransport } from "./memory.js";
import { Outbox } from "./outbox.js";
import { PROTOCOLS } from "./protocol/index.js";
import { Channel, Transport } from "./transport.js";

const impls: [string, () => Promise<[Transport, Transport]>][] = [
  ["memory", async () => {
    const net = new MemoryNetwork();
    return [await MemoryTransport.create(net, "10.0.0.1"), await MemoryTransport.create(net, "10.0.0.2")];
  }],
  ["libp2p", async () => [
    await Libp2pTransport.create({ identity: await Identity.generate() }),
    await Libp2pTransport.create({ identity: await Identity.generate() }),
  ]],
];

const stoppers: (() => Promise<void>)[] = [];
afterEach(async () => {
  await Promise.all(stoppers.splice(0).map((s) => s().catch(() => {})));
});

describe.each(impls)("Outbox over %s", (_name, make) => {
  it("keeps the order of messages sent before, during and after the dial", async () => {
    const [a, b] = await make();
    stoppers.push(() => a.stop(), () => b.stop());
    const N = 600;
    const got: number[] = [];
    let done!: () => void;
    const all = new Promise<void>((r) => (done = r));
    await b.handle(PROTOCOLS.steps, (ch) => void (async () => {
      try {
        for await (const m of ch.messages()) {
          got.push(new DataView(m.buffer, m.byteOffset, 4).getUint32(0, true));
          if (got.length === N) done();
        }
      } catch { /* the test ended */ }
    })(), { maxMessageBytes: 1 << 20, maxStreamsPerConnection: 4 });
    const out = new Outbox(a, logger("test"));
    const sends: Promise<void>[] = [];
    for (let i = 0; i < N; i++) {
      const m = new Uint8Array(64 + (i % 7) * 1000);
      new DataView(m.buffer).setUint32(0, i, true);
      sends.push(out.send(b.peerId, b.addrs(), m));
      // vary how many microtask turns and event-loop turns pass between sends,
      // so that some land between the dial's resolution and the hand-over of those waiting
      if (i % 3 === 0) await Promise.resolve();
      if (i % 11 === 0) await new Promise((r) => setImmediate(r));
    }
    await Promise.all(sends);
    await all;
    expect(got).toEqual(Array.from({ length: N }, (_, i) => i));
  });

  it("hands a message to an open stream in the turn it is sent", async () => {
    const [a, b] = await make();
    stoppers.push(() => a.stop(), () => b.stop());
    await b.handle(PROTOCOLS.steps, (ch) => void (async () => {
      try {
        for await (const _ of ch.messages()) void _;
      } catch { /* the test ended */ }
    })(), { maxMessageBytes: 1 << 20, maxStreamsPerConnection: 4 });
    const handed: number[] = [];
    // the transport as it is, but noting each message its channel is given
    const noting = Object.create(a, {
      dial: { value: async (...args: Parameters<Transport["dial"]>): Promise<Channel> => {
        const ch = await a.dial(...args);
        const send = ch.send.bind(ch);
        ch.send = (m: Uint8Array, signal?: AbortSignal) => (handed.push(m[0]), send(m, signal));
        return ch;
      } },
    }) as Transport;
    const out = new Outbox(noting, logger("test"));
    await out.send(b.peerId, b.addrs(), Uint8Array.of(1));
    const p = out.send(b.peerId, b.addrs(), Uint8Array.of(2));
    expect(handed, "handed over before send() returned").toEqual([1, 2]);
    await p;
  });
});
