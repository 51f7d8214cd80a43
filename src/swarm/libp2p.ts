// Transport over js-libp2p: TCP, Noise (encrypted, authenticated by the peers'
// ed25519 keys), Yamux, identify and ping. An optional pre-shared swarm key
// (libp2p pnet) keeps strangers out of a private swarm.

import "./polyfill.js";
import * as fs from "node:fs";
import * as path from "node:path";
import { createLibp2p, Libp2p } from "libp2p";
import { tcp } from "@libp2p/tcp";
import { noise } from "@chainsafe/libp2p-noise";
import { yamux } from "@chainsafe/libp2p-yamux";
import { identify } from "@libp2p/identify";
import { ping } from "@libp2p/ping";
import { preSharedKey } from "@libp2p/pnet";
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from "@libp2p/crypto/keys";
import { multiaddr } from "@multiformats/multiaddr";
import type { Stream, PrivateKey } from "@libp2p/interface";
import { Channel, Transport } from "./transport.js";
import { Deframer, frame } from "./wire.js";

export interface Libp2pOptions {
  listen?: string[]; // multiaddrs, default /ip4/127.0.0.1/tcp/0
  keyFile?: string; // persisted ed25519 identity (created when missing)
  swarmKey?: string; // pre-shared key in the libp2p swarm.key format, or a file holding it
  maxMessageBytes?: number; // default 256 MiB
}

export async function loadOrCreateKey(file: string | undefined): Promise<PrivateKey> {
  if (file && fs.existsSync(file)) return privateKeyFromProtobuf(fs.readFileSync(file));
  const key = await generateKeyPair("Ed25519");
  if (file) {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, privateKeyToProtobuf(key), { mode: 0o600 });
  }
  return key;
}

// A swarm key in the go-ipfs format: "/key/swarm/psk/1.0.0/\n/base16/\n<64 hex>"
export function swarmKeyBytes(spec: string): Uint8Array {
  const text = fs.existsSync(spec) ? fs.readFileSync(spec, "utf8") : spec;
  if (/^[0-9a-fA-F]{64}$/.test(text.trim())) return Buffer.from(`/key/swarm/psk/1.0.0/\n/base16/\n${text.trim()}`);
  if (!/^\/key\/swarm\/psk\/1\.0\.0\/\n\/base16\/\n[0-9a-fA-F]{64}\s*$/.test(text)) throw new Error("swarm key must be 64 hex characters or a swarm.key file");
  return Buffer.from(text.trim());
}

class StreamChannel implements Channel {
  closed = false;
  constructor(private s: Stream, readonly remotePeer: string, private maxBytes: number) {
    s.addEventListener("close", () => (this.closed = true));
  }
  async send(msg: Uint8Array, signal?: AbortSignal): Promise<void> {
    if (this.closed || this.s.status !== "open") throw new Error(`stream to ${this.remotePeer} is closed`);
    if (!this.s.send(frame(msg))) await this.s.onDrain({ signal });
  }
  async *messages(): AsyncIterable<Uint8Array> {
    const d = new Deframer(this.maxBytes);
    for await (const chunk of this.s) {
      const u = chunk instanceof Uint8Array ? chunk : chunk.subarray();
      for (const m of d.push(u)) yield m;
    }
  }
  async close(): Promise<void> {
    this.closed = true;
    await this.s.close().catch(() => this.s.abort(new Error("close failed")));
  }
  abort(err: Error): void {
    this.closed = true;
    this.s.abort(err);
  }
}

export class Libp2pTransport implements Transport {
  private disconnectCbs: ((peer: string) => void)[] = [];
  private constructor(private node: Libp2p, private maxBytes: number) {
    node.addEventListener("peer:disconnect", (e) => {
      const peer = e.detail.toString();
      for (const cb of this.disconnectCbs) cb(peer);
    });
  }

  static async create(o: Libp2pOptions = {}): Promise<Libp2pTransport> {
    const privateKey = await loadOrCreateKey(o.keyFile);
    const node = await createLibp2p({
      privateKey,
      addresses: { listen: o.listen ?? ["/ip4/127.0.0.1/tcp/0"] },
      transports: [tcp()],
      connectionEncrypters: [noise()],
      streamMuxers: [yamux()],
      connectionProtector: o.swarmKey ? preSharedKey({ psk: swarmKeyBytes(o.swarmKey) }) : undefined,
      services: { identify: identify(), ping: ping() },
      connectionManager: { maxConnections: 1024 },
    });
    return new Libp2pTransport(node, o.maxMessageBytes ?? 256 * 2 ** 20);
  }

  get peerId(): string {
    return this.node.peerId.toString();
  }
  addrs(): string[] {
    return this.node.getMultiaddrs().map(String);
  }
  async handle(protocol: string, handler: (ch: Channel) => void): Promise<void> {
    await this.node.handle(protocol, (stream, conn) => handler(new StreamChannel(stream, conn.remotePeer.toString(), this.maxBytes)), {
      maxInboundStreams: 1024, maxOutboundStreams: 1024,
    });
  }
  async dial(addr: string, protocol: string, signal?: AbortSignal): Promise<Channel> {
    const s = await this.node.dialProtocol(multiaddr(addr), protocol, { signal });
    const peer = multiaddr(addr).getComponents().find((c) => c.name === "p2p")?.value ?? "";
    return new StreamChannel(s, peer, this.maxBytes);
  }
  onDisconnect(cb: (peer: string) => void): void {
    this.disconnectCbs.push(cb);
  }
  async ping(addr: string, signal?: AbortSignal): Promise<number> {
    return (this.node.services as { ping: { ping(a: ReturnType<typeof multiaddr>, o?: { signal?: AbortSignal }): Promise<number> } }).ping.ping(multiaddr(addr), { signal });
  }
  async stop(): Promise<void> {
    await this.node.stop();
  }
}
