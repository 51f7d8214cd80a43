// Transport over js-libp2p: TCP, Noise (encrypted, authenticated by the peers'
// ed25519 keys), Yamux, identify and ping. A connection gate keeps banned
// peers and over-connected addresses out; an optional pre-shared swarm key
// (libp2p pnet) keeps everyone without it out. Messages are length-prefixed
// (@libp2p/utils' decoder, linear in the bytes received) with a size limit per
// protocol; a reader that falls behind pauses the stream, so the sender's
// Yamux window closes instead of our memory filling up.

import "./polyfill.js";
import * as fs from "node:fs";
import { createLibp2p, Libp2p } from "libp2p";
import { tcp } from "@libp2p/tcp";
import { noise } from "@chainsafe/libp2p-noise";
import { yamux } from "@chainsafe/libp2p-yamux";
import { identify } from "@libp2p/identify";
import { ping } from "@libp2p/ping";
import { preSharedKey } from "@libp2p/pnet";
import { peerIdFromString } from "@libp2p/peer-id";
import { LengthPrefixedDecoder } from "@libp2p/utils";
import { multiaddr, Multiaddr } from "@multiformats/multiaddr";
import * as varint from "uint8-varint";
import type { Connection, Stream } from "@libp2p/interface";
import { LayerswarmError } from "../errors.js";
import { Identity } from "./identity.js";
import { PeerGate } from "./policy.js";
import { Channel, DialOptions, HandleOptions, Transport } from "./transport.js";

export interface Libp2pOptions {
  identity: Identity;
  listen?: string[]; // multiaddrs, default /ip4/127.0.0.1/tcp/0
  swarmKey?: string; // pre-shared key in the libp2p swarm.key format, or a file holding it
  gate?: PeerGate;
}

// A swarm key in the go-ipfs format: "/key/swarm/psk/1.0.0/\n/base16/\n<64 hex>"
export function swarmKeyBytes(spec: string): Uint8Array {
  const text = fs.existsSync(spec) ? fs.readFileSync(spec, "utf8") : spec;
  if (/^[0-9a-fA-F]{64}$/.test(text.trim())) return Buffer.from(`/key/swarm/psk/1.0.0/\n/base16/\n${text.trim()}`);
  if (!/^\/key\/swarm\/psk\/1\.0\.0\/\n\/base16\/\n[0-9a-fA-F]{64}\s*$/.test(text))
    throw new LayerswarmError("BAD_ARGUMENT", "swarm key must be 64 hex characters or a swarm.key file");
  return Buffer.from(text.trim());
}

const PAUSE_BYTES = 1 << 20;

function ipOf(ma: Multiaddr): string {
  const c = ma.getComponents().find((x) => x.name === "ip4" || x.name === "ip6" || x.name === "dns4" || x.name === "dns6" || x.name === "dns");
  return c?.value ?? ma.toString();
}

// Messages are taken off the stream as they arrive, from the start (not only
// once someone iterates), decoded into a queue; past PAUSE_BYTES queued the
// stream is paused, which stops Yamux window updates, so the sender waits.
class StreamChannel implements Channel {
  closed = false;
  private queue: Uint8Array[] = [];
  private queued = 0;
  private ended: Error | null | undefined;
  private wake?: () => void;
  private dec: LengthPrefixedDecoder;

  constructor(private s: Stream, readonly remotePeer: string, readonly remoteIp: string, maxBytes: number) {
    this.dec = new LengthPrefixedDecoder({ maxDataLength: maxBytes, maxBufferSize: maxBytes + 16 });
    s.addEventListener("message", ((evt: { data: Uint8Array }) => this.onData(evt.data)) as never);
    const onEnd = (evt?: Event) => {
      this.closed = true;
      if (this.ended === undefined) this.ended = (evt as { error?: Error } | undefined)?.error ?? null;
      this.wake?.();
    };
    s.addEventListener("close", onEnd);
    s.addEventListener("remoteCloseWrite", () => {
      if (this.ended === undefined) this.ended = null;
      this.wake?.();
    });
  }

  private onData(data: Uint8Array): void {
    try {
      for (const m of this.dec.decode(data)) {
        const u = m.slice(); // a copy: the transport may reuse the buffers it decoded from
        this.queue.push(u);
        this.queued += u.length;
      }
      if (this.queued > PAUSE_BYTES && this.s.readStatus === "readable") this.s.pause();
    } catch (e) {
      const err = new LayerswarmError("BAD_MESSAGE", `from ${this.remotePeer.slice(-8)}: ${(e as Error).message}`);
      this.ended = err;
      this.closed = true;
      this.s.abort(err);
    }
    this.wake?.();
  }

  async send(msg: Uint8Array, signal?: AbortSignal): Promise<void> {
    if (this.closed || this.s.status !== "open") throw new LayerswarmError("UNREACHABLE", `stream to ${this.remotePeer.slice(-8)} is closed`);
    const b = new Uint8Array(varint.encodingLength(msg.length) + msg.length);
    varint.encodeUint8Array(msg.length, b);
    b.set(msg, b.length - msg.length);
    if (!this.s.send(b)) await this.s.onDrain({ signal });
    // the stream's own write buffer has no bound: wait while it holds more than
    // PAUSE_BYTES (the receiver paused, its window closed), so the sender is held back
    while (this.s.writeBufferLength > PAUSE_BYTES && this.s.status === "open") {
      signal?.throwIfAborted();
      await new Promise<void>((resolve) => {
        const events = ["drain", "idle", "close"] as const;
        const done = () => {
          for (const e of events) this.s.removeEventListener(e, done);
          signal?.removeEventListener("abort", done);
          resolve();
        };
        for (const e of events) this.s.addEventListener(e, done);
        signal?.addEventListener("abort", done);
      });
    }
  }

  async *messages(): AsyncIterable<Uint8Array> {
    for (;;) {
      if (this.queue.length > 0) {
        const m = this.queue.shift()!;
        this.queued -= m.length;
        if (this.queued < PAUSE_BYTES / 2 && this.s.readStatus === "paused") this.s.resume();
        yield m;
        continue;
      }
      if (this.ended === null) return;
      if (this.ended) throw this.ended;
      await new Promise<void>((r) => (this.wake = r));
      this.wake = undefined;
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
  private constructor(private node: Libp2p, readonly gate: PeerGate) {
    node.addEventListener("peer:disconnect", (e) => {
      const peer = e.detail.toString();
      for (const cb of this.disconnectCbs) cb(peer);
    });
    node.addEventListener("connection:open", (e) => gate.opened(ipOf(e.detail.remoteAddr)));
    node.addEventListener("connection:close", (e) => gate.closed(ipOf(e.detail.remoteAddr)));
  }

  static async create(o: Libp2pOptions): Promise<Libp2pTransport> {
    const gate = o.gate ?? new PeerGate();
    const node = await createLibp2p({
      privateKey: o.identity.key,
      addresses: { listen: o.listen ?? ["/ip4/127.0.0.1/tcp/0"] },
      transports: [tcp()],
      connectionEncrypters: [noise()],
      streamMuxers: [yamux({ streamOptions: { maxStreamWindowSize: 2 * 2 ** 20 } })],
      connectionProtector: o.swarmKey ? preSharedKey({ psk: swarmKeyBytes(o.swarmKey) }) : undefined,
      services: { identify: identify(), ping: ping() },
      connectionManager: { maxConnections: 512, maxIncomingPendingConnections: 64 },
      connectionGater: {
        denyInboundConnection: (maConn) => !gate.allowIp(ipOf(maConn.remoteAddr)),
        denyInboundEncryptedConnection: (peer) => !gate.allowPeer(peer.toString()),
        denyDialPeer: (peer) => !gate.allowPeer(peer.toString()),
      },
    });
    return new Libp2pTransport(node, gate);
  }

  get peerId(): string {
    return this.node.peerId.toString();
  }
  addrs(): string[] {
    return this.node.getMultiaddrs().map(String);
  }
  async handle(protocols: readonly string[], handler: (ch: Channel) => void, o: HandleOptions): Promise<void> {
    for (const p of protocols)
      await this.node.handle(p, (stream, conn) => handler(new StreamChannel(stream, conn.remotePeer.toString(), ipOf(conn.remoteAddr), o.maxMessageBytes)), {
        maxInboundStreams: o.maxStreamsPerConnection, maxOutboundStreams: 64,
      });
  }

  private async connection(peer: string, addrs: string[], signal?: AbortSignal): Promise<Connection> {
    const open = this.node.getConnections(peerIdFromString(peer)).find((c) => c.status === "open");
    if (open) return open;
    let last: unknown;
    for (const a of addrs) {
      try {
        const ma = multiaddr(a.includes("/p2p/") ? a : `${a}/p2p/${peer}`);
        if (ma.getComponents().find((c) => c.name === "p2p")?.value !== peer) continue;
        return await this.node.dial(ma, { signal });
      } catch (e) {
        last = e;
        if (signal?.aborted) break;
      }
    }
    throw new LayerswarmError("UNREACHABLE", `cannot reach ${peer.slice(-8)}: ${(last as Error)?.message ?? "no usable address"}`);
  }

  async dial(peer: string, addrs: string[], protocol: string, o: DialOptions): Promise<Channel> {
    const conn = await this.connection(peer, addrs, o.signal);
    const s = await conn.newStream(protocol, { signal: o.signal, maxOutboundStreams: 64 });
    return new StreamChannel(s, conn.remotePeer.toString(), ipOf(conn.remoteAddr), o.maxMessageBytes);
  }
  onDisconnect(cb: (peer: string) => void): void {
    this.disconnectCbs.push(cb);
  }
  async hangUp(peer: string): Promise<void> {
    await this.node.hangUp(peerIdFromString(peer)).catch(() => {});
  }
  async ping(peer: string, addrs: string[], signal?: AbortSignal): Promise<number> {
    await this.connection(peer, addrs, signal);
    const svc = (this.node.services as { ping: { ping(p: ReturnType<typeof peerIdFromString>, o?: { signal?: AbortSignal }): Promise<number> } }).ping;
    return svc.ping(peerIdFromString(peer), { signal });
  }
  async stop(): Promise<void> {
    await this.node.stop();
  }
}
