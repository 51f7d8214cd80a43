// Floors for the per-hop overhead, measured in the same run: the time one
// message of `bytes` takes per hop (half an echo's round trip, both ends in
// this process) over our libp2p transport alone (TCP + Noise + Yamux and the
// length prefix, no swarm) and over raw TCP.

import * as net from "node:net";
import { Identity } from "../src/swarm/identity.js";
import { Libp2pTransport } from "../src/swarm/libp2p.js";

const P = "/layerswarm/bench-echo/1";
const median = (x: number[]) => [...x].sort((p, q) => p - q)[x.length >> 1];

async function libp2pHop(bytes: number, n: number): Promise<number> {
  const a = await Libp2pTransport.create({ identity: await Identity.generate() });
  const b = await Libp2pTransport.create({ identity: await Identity.generate() });
  try {
    await b.handle([P], (ch) => void (async () => {
      try {
        for await (const m of ch.messages()) await ch.send(m);
      } catch { /* closed */ }
    })(), { maxMessageBytes: 1 << 20, maxStreamsPerConnection: 4 });
    const ch = await a.dial(b.peerId, b.addrs(), P, { maxMessageBytes: 1 << 20 });
    const it = ch.messages()[Symbol.asyncIterator]();
    const msg = new Uint8Array(bytes).fill(7), times: number[] = [];
    for (let i = 0; i < n; i++) {
      const t0 = performance.now();
      await ch.send(msg);
      await it.next();
      times.push((performance.now() - t0) / 2);
    }
    return median(times.slice(n >> 2));
  } finally {
    await a.stop();
    await b.stop();
  }
}

async function tcpHop(bytes: number, n: number): Promise<number> {
  const server = net.createServer({ noDelay: true }, (s) => s.on("data", (d) => s.write(d)));
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as net.AddressInfo).port;
  const c = net.connect({ port, host: "127.0.0.1", noDelay: true });
  await new Promise((r) => c.once("connect", r));
  const msg = Buffer.alloc(bytes, 7), times: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await new Promise<void>((resolve) => {
      let got = 0;
      const on = (d: Buffer) => {
        got += d.length;
        if (got >= bytes) {
          c.off("data", on);
          resolve();
        }
      };
      c.on("data", on);
      c.write(msg);
    });
    times.push((performance.now() - t0) / 2);
  }
  c.destroy();
  server.close();
  return median(times.slice(n >> 2));
}

export async function transportFloors(bytes: number, n = 400): Promise<{ libp2p: number; tcp: number }> {
  return { libp2p: await libp2pHop(bytes, n), tcp: await tcpHop(bytes, n) };
}
