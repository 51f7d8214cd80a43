// Floors for the per-hop overhead, measured in the same run: the time one
// message of `bytes` takes per hop (half an echo's round trip) to another
// process on loopback, over our libp2p transport alone (TCP + Noise + Yamux
// and the length prefix, no swarm) and over raw TCP. Like a swarm's hops, each
// crosses processes: the receiver must be woken and scheduled.
//
//   node dist/bench/floors.js --serve   (the echo process; prints its addresses)

import { ChildProcess, spawn } from "node:child_process";
import * as net from "node:net";
import { fileURLToPath } from "node:url";
import { Identity } from "../src/swarm/identity.js";
import { Libp2pTransport } from "../src/swarm/libp2p.js";
import { Channel } from "../src/swarm/transport.js";

const P = "/layerswarm/bench-echo/1";
const median = (x: number[]) => [...x].sort((p, q) => p - q)[x.length >> 1];

async function serve(): Promise<void> {
  const t = await Libp2pTransport.create({ identity: await Identity.generate() });
  await t.handle([P], (ch) => void (async () => {
    try {
      for await (const m of ch.messages()) await ch.send(m);
    } catch { /* closed */ }
  })(), { maxMessageBytes: 1 << 20, maxStreamsPerConnection: 4 });
  const server = net.createServer({ noDelay: true }, (s) => s.on("data", (d) => s.write(d)));
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  process.stdout.write(JSON.stringify({ peer: t.peerId, addrs: t.addrs(), tcp: (server.address() as net.AddressInfo).port }) + "\n");
  process.on("disconnect", () => process.exit(0));
}

async function timeEchoes(once: () => Promise<void>, n: number): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await once();
    times.push((performance.now() - t0) / 2);
  }
  return median(times.slice(n >> 2));
}

export async function transportFloors(bytes: number, n = 400): Promise<{ libp2p: number; tcp: number }> {
  const child: ChildProcess = spawn(process.execPath, [fileURLToPath(import.meta.url), "--serve"], { stdio: ["ignore", "pipe", "inherit", "ipc"] });
  try {
    const info = await new Promise<{ peer: string; addrs: string[]; tcp: number }>((resolve, reject) => {
      let out = "";
      child.stdout!.on("data", (d) => {
        out += d;
        if (out.includes("\n")) resolve(JSON.parse(out.split("\n")[0]));
      });
      child.once("exit", (c) => reject(new Error(`the echo process exited with ${c}`)));
    });
    const a = await Libp2pTransport.create({ identity: await Identity.generate() });
    let libp2p: number;
    try {
      const ch: Channel = await a.dial(info.peer, info.addrs, P, { maxMessageBytes: 1 << 20 });
      const it = ch.messages()[Symbol.asyncIterator]();
      const msg = new Uint8Array(bytes).fill(7);
      libp2p = await timeEchoes(async () => {
        await ch.send(msg);
        await it.next();
      }, n);
    } finally {
      await a.stop();
    }
    const c = net.connect({ port: info.tcp, host: "127.0.0.1", noDelay: true });
    await new Promise((r) => c.once("connect", r));
    const buf = Buffer.alloc(bytes, 7);
    const tcp = await timeEchoes(() => new Promise<void>((resolve) => {
      let got = 0;
      const on = (d: Buffer) => {
        got += d.length;
        if (got >= bytes) {
          c.off("data", on);
          resolve();
        }
      };
      c.on("data", on);
      c.write(buf);
    }), n);
    c.destroy();
    return { libp2p, tcp };
  } finally {
    child.kill();
  }
}

if (process.argv.includes("--serve")) await serve();
